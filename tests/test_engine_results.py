"""Results that cross module borders are dataclasses: the engine's items and outputs, predict's summary."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pytest
from skimage.draw import disk

from micrometry.engine import LocalEngine, _raise_worker_error, _RayWorker
from micrometry.errors import InputError
from micrometry.io.image import write_image


@dataclass
class Item:
    path: str
    n: int


@dataclass
class Output:
    path: str
    doubled: int
    note: str | None = None


class ToyWorker:
    item_type, output_type = Item, Output

    def __init__(self, factor: int = 2):
        self.factor = factor

    def __call__(self, items: list[Item]) -> list[Output]:
        if any(i.n < 0 for i in items):
            raise InputError("negative", items[0].path)
        return [Output(i.path, i.n * self.factor) for i in items]


def test_local_engine_yields_the_workers_dataclasses_in_order():
    items = [Item(f"f{k}", k) for k in range(5)]
    got = list(LocalEngine(batch_size=2).map(ToyWorker, {"factor": 3}, items))
    assert [index for index, _ in got] == [0, 1, 2, 3, 4]
    assert [o for _, o in got] == [Output(f"f{k}", 3 * k) for k in range(5)]


def test_ray_actor_side_round_trips_items_and_outputs_as_json():
    """What a Ray actor does with one row, without Ray: JSON in, the worker's dataclasses, JSON out."""
    actor = _RayWorker(ToyWorker, {"factor": 2}, threads=1)
    rows = {"start": [0], "items": [json.dumps([asdict(Item("a", 1)), asdict(Item("b", 2))])]}
    outputs = [Output(**o) for o in json.loads(actor(rows)["outputs"][0])]
    assert outputs == [Output("a", 2), Output("b", 4)]
    failed = json.loads(actor({"start": [0], "items": [json.dumps([asdict(Item("c", -1))])]})["outputs"][0])
    with pytest.raises(InputError, match="negative"):  # the user's error travels back typed
        _raise_worker_error(failed[0])


def test_particle_prediction_returns_a_summary_and_per_image_dataclasses(tmp_path):
    from micrometry.particles.models import load_particle_model
    from micrometry.particles.predict import (
        ImageSegmentation,
        PredictionSummary,
        SegmentItem,
        SegmentWorker,
        predict_folder,
    )

    image = np.full((96, 128), 200, np.uint8)
    for x in (30, 64, 98):
        image[disk((48, x), 12)] = 50
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", image)
    (images / "broken.png").write_bytes(b"not a png")
    segmenter = load_particle_model("watershed")
    summary = predict_folder(segmenter, images, tmp_path / "pred")
    assert isinstance(summary, PredictionSummary)
    assert (summary.images, summary.particles, summary.model) == (1, 3, "watershed")
    assert [s["file"].endswith("broken.png") for s in summary.skipped] == [True]
    assert summary.per_image[0]["particles"] == 3 and summary.seconds_per_image >= 0
    out = tmp_path / "worker"
    (out / "labels").mkdir(parents=True)
    (out / "rois").mkdir()
    worker = SegmentWorker(segmenter, str(out), write_overlays=False)
    found, skipped = worker(
        [SegmentItem(1, str(images / "a.png"), "a.png"), SegmentItem(2, str(images / "broken.png"), "b.png")]
    )
    assert isinstance(found, ImageSegmentation) and found.count == 3 and len(found.results) == 3
    assert found.skipped is None and skipped.skipped and skipped.count == 0
