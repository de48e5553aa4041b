"""Issue 26, "What the red team found": each case, as a test.

The contract: inputs survive, user errors exit 2 with one line
``error: PATH: problem`` (never a traceback), no silent wrong number, and one
request or command cannot hold a machine for free.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from helpers import free_port, one_error_line
from micrometry.cli import run
from micrometry.errors import ImageReadError, InputError
from micrometry.io.atomic import atomic_dir, atomic_path, refuse_existing
from micrometry.io.image import decode_image, read_image, write_image

# --------------------------------------------------------------------------- helpers


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def sem_images(tmp_path):
    """A folder of three 72x48 SEM-like PNGs."""
    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(folder / f"s{i}.png", rng.integers(0, 255, (72, 48)).astype(np.uint8))
    return folder


@pytest.fixture
def photos(tmp_path):
    """``P/test/images``: two small photos of dark discs on a bright field."""
    folder = tmp_path / "P" / "test" / "images"
    yy, xx = np.mgrid[:96, :128]
    for i in range(2):
        image = np.full((96, 128), 220, np.uint8)
        for cy, cx in ((30, 30), (60, 90), (30, 100)):
            image[(yy - cy - i) ** 2 + (xx - cx) ** 2 < 64] = 40
        write_image(folder / f"p{i}.png", image)
    return folder


def _coco(path: Path, annotations: list, height: int = 64, width: int = 80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "height": height, "width": width}],
                "annotations": annotations,
                "categories": [{"id": 1, "name": "particle"}],
            }
        )
    )
    return path


def _square(ann_id: int, x0: int, y0: int, x1: int, y1: int) -> dict:
    return {
        "id": ann_id,
        "image_id": 1,
        "category_id": 1,
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
    }


# =========================================================================== inputs destroyed


def test_depth_predict_out_is_the_images_folder(sem_images, capsys):
    before = snapshot(sem_images)
    assert run(["depth", "predict", sem_images, "--out", sem_images, "--overwrite"]) == 2
    one_error_line(capsys, "--out is the input")
    assert snapshot(sem_images) == before


def test_particles_predict_out_holding_the_images_is_refused(photos, capsys):
    before = snapshot(photos)
    out = photos.parent  # P/test holds P/test/images
    assert run(["particles", "predict", photos, "--out", out, "--overwrite", "--model", "watershed"]) == 2
    one_error_line(capsys, "--out holds the input")
    assert snapshot(photos) == before


def test_particles_compare_out_is_batch_a(tmp_path, capsys):
    a, b = tmp_path / "A", tmp_path / "B"
    for folder in (a, b):
        write_image(folder / "x.png", np.zeros((8, 8), np.uint16))
    assert run(["particles", "compare", a, b, "--out", a, "--overwrite"]) == 2
    one_error_line(capsys, "--out is the input")
    assert (a / "x.png").is_file()


def test_export_out_is_the_run(tmp_path, capsys):
    run_dir = tmp_path / "RUN"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"method": "lookup"}')
    assert run(["export", run_dir, "--out", run_dir, "--overwrite"]) == 2
    one_error_line(capsys, "--out is the input")
    assert (run_dir / "config.json").read_text() == '{"method": "lookup"}'


def test_out_through_a_link_or_inside_an_input_or_the_model_run_is_refused(sem_images, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(sem_images)
    assert run(["depth", "predict", sem_images, "--out", link, "--overwrite"]) == 2
    one_error_line(capsys, "is the input")
    assert run(["depth", "predict", sem_images, "--out", sem_images / "pred"]) == 2
    one_error_line(capsys, "lies inside the input")
    model_run = tmp_path / "RUN"
    model_run.mkdir()
    assert run(["depth", "predict", sem_images, "--model", model_run, "--out", model_run, "--overwrite"]) == 2
    one_error_line(capsys, "(--model)")
    assert sorted(p.name for p in sem_images.iterdir()) == ["s0.png", "s1.png", "s2.png"]


def test_out_holding_the_images_of_a_list_is_refused(sem_images, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/s0.png\nimgs/s1.png\n")
    before = snapshot(sem_images)
    assert run(["depth", "predict", listing, "--out", sem_images, "--overwrite"]) == 2
    one_error_line(capsys, "--out holds the input")
    assert snapshot(sem_images) == before


@pytest.mark.parametrize("command", ["particles", "sem", "sem-frames", "databar"])
def test_synth_out_and_truth_must_not_overlap(tmp_path, capsys, command):
    out = tmp_path / "data"
    assert run(["synth", command, out, "--truth", out / "truth"]) == 2
    one_error_line(capsys, "--truth lies inside the output")
    assert run(["synth", command, out, "--truth", out]) == 2
    one_error_line(capsys, "--truth is the output")
    assert not out.exists()


def test_refuse_overlap_compares_resolved_paths(tmp_path):
    from micrometry.io.atomic import refuse_overlap

    refuse_overlap({"--out": tmp_path / "out"}, {"IMAGES": tmp_path / "in"})  # siblings: fine
    refuse_overlap({"--out": tmp_path / "in.csv"}, {"IMAGES": tmp_path / "in"})
    with pytest.raises(InputError, match="holds the input"):
        refuse_overlap({"--out": tmp_path}, {"IMAGES": tmp_path / "in"})
    with pytest.raises(InputError, match="lies inside the input"):
        refuse_overlap({"--out": tmp_path / "in" / "x"}, {"IMAGES": tmp_path / "in"})
    with pytest.raises(InputError, match="is the input"):
        refuse_overlap({"--out": tmp_path / "in" / "x" / ".."}, {"IMAGES": tmp_path / "in"})


# =========================================================================== silent wrong answers


def test_uint32_label_ids_above_65535_are_kept(tmp_path, capsys):
    labels = np.zeros((40, 60), np.uint32)
    for k in range(6):  # ids 70000..70005: clipping to 16 bit made them one particle of id 65535
        labels[5:15, 2 + 9 * k : 8 + 9 * k] = 70_000 + k
    labels[25:35, 5:15] = 3
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "a.tif", labels)
    from micrometry.io.image import read_label_array

    assert read_label_array(tmp_path / "labels" / "a.tif").max() == 70_005
    assert run(["particles", "measure", tmp_path / "labels", "--out", tmp_path / "t.csv"]) == 0
    import pandas as pd

    table = pd.read_csv(tmp_path / "t.csv")
    assert len(table) == 7
    assert sorted(table["Area_px2"].round().astype(int).tolist()) == [60] * 6 + [100]


def test_label_ids_beyond_int32_are_refused_not_wrapped(tmp_path, capsys):
    labels = np.zeros((10, 10), np.uint32)
    labels[2:5, 2:5] = 2**32 - 1
    tifffile.imwrite(tmp_path / "big.tif", labels)
    from micrometry.particles.label_sources import read_label_image

    with pytest.raises(ImageReadError, match="label ids must lie in"):
        read_label_image(tmp_path / "big.tif")


def test_a_wide_integer_photo_is_scaled_with_a_warning_not_clipped(tmp_path):
    image = (np.arange(600, dtype=np.uint32).reshape(20, 30) * 1000).astype(np.uint32)
    tifffile.imwrite(tmp_path / "u32.tif", image)
    with pytest.warns(UserWarning, match="uint32 image scaled"):
        read = read_image(tmp_path / "u32.tif")
    assert read.dtype == np.uint16 and read.max() == 65535 and len(np.unique(read)) == 600


@pytest.mark.parametrize("pages", [3, 4])
def test_multi_page_tiff_stacks_are_not_read_as_rgb(tmp_path, pages, capsys):
    stack = np.stack([np.full((48, 64), 40 * k, np.uint8) for k in range(pages)])
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "stack.tif", stack, photometric="minisblack")  # pages, not RGB samples
    with pytest.raises(ImageReadError, match=f"a stack of {pages} images"):
        read_image(images / "stack.tif")
    out = tmp_path / "pred"
    args = ["particles", "predict", images, "--model", "watershed"]
    assert run([*args, "--out", out, "--strict"]) == 2
    one_error_line(capsys, f"a stack of {pages} images")
    assert not out.exists()
    # a real RGB TIFF (one page, RGB samples) still reads, as luminance
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 200
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.warns(UserWarning, match="colour image"):
        assert read_image(tmp_path / "rgb.tif").shape == (20, 30)


def test_web_refuses_a_unit_without_a_pixel_size():
    from micrometry.web import options

    with pytest.raises(InputError, match="needs a pixel size"):
        options.length_unit("nm", options.PIXEL_SIZE, pixel_size_given=False)
    assert options.length_unit("nm", 0.5, pixel_size_given=True) == "nm"
    assert options.length_unit("", options.PIXEL_SIZE, pixel_size_given=False) == "px"


def test_web_endpoint_answers_400_for_a_unit_without_a_pixel_size():
    testclient = pytest.importorskip("starlette.testclient")
    from micrometry.web.app import create_app

    client = testclient.TestClient(create_app())
    answer = client.post(
        "/api/particles", data={"unit": "nm", "pixel_size": ""}, files={"file": ("a.png", b"x")}
    )
    assert answer.status_code == 400 and "needs a pixel size" in answer.json()["error"]


def _fake_run(folder: Path, config: dict) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "job,config",
    [
        ("depth", {"method": "lookup", "method_config": {}}),
        ("particles", {"model": "center-offset", "settings": {}}),
    ],
)
def test_resume_on_another_dataset_is_refused(job, config, tmp_path, capsys):
    first, other = tmp_path / "A", tmp_path / "B"
    first.mkdir(), other.mkdir()
    out = _fake_run(tmp_path / "run", {**config, "data": str(first)})
    assert run([job, "train", other, "--out", out, "--resume", "--threads", "1"]) == 2
    one_error_line(capsys, f"run was trained on {first}")


@pytest.mark.parametrize(
    "args",
    [
        ["particles", "measure", "LABELS", "--out", "OUT/t.csv", "--pixel-size", "1e-300", "--unit", "um"],
        ["particles", "measure", "LABELS", "--out", "OUT/t.csv", "--pixel-size", "1e160", "--unit", "um"],
        ["depth", "measure", "LABELS", "--out", "OUT/t.csv", "--nm-per-px", "1e-300"],
        ["depth", "measure", "LABELS", "--out", "OUT/t.csv", "--nm-per-px", "1e160"],
    ],
)
def test_absurd_pixel_sizes_are_refused_before_work(tmp_path, capsys, args):
    labels = tmp_path / "labels"
    write_image(labels / "a.png", np.zeros((72, 48), np.uint8))
    args = [a.replace("LABELS", str(labels)).replace("OUT", str(tmp_path / "out")) for a in args]
    assert run(args) == 2
    one_error_line(capsys, "must be")
    assert not (tmp_path / "out").exists()


def test_image_calibration_out_of_range_is_refused():
    from micrometry.options import calibration

    with pytest.raises(InputError, match="implausible"):
        calibration(None, None, (1e-300, "um"))
    with pytest.raises(InputError, match="--pixel-size: must be"):
        calibration(1e160, "um")


def test_measure_warns_when_an_annotation_covers_the_image_and_hides_the_others(tmp_path, capsys):
    coco = _coco(
        tmp_path / "coco" / "annotations.json",
        [_square(1, 0, 0, 80, 64), _square(2, 10, 10, 20, 20), _square(3, 40, 30, 50, 40)],
    )
    assert run(["particles", "measure", coco, "--out", tmp_path / "t.csv"]) == 0
    err = capsys.readouterr().err
    assert "covers 100 % of the image" in err
    assert "2 mask(s) lie entirely under earlier ones" in err


# =========================================================================== tracebacks


def test_250_character_file_name_keeps_its_temporary_within_255_bytes(tmp_path, sem_images, capsys):
    from micrometry.io.atomic import NAME_MAX

    name = "x" * 246 + ".png"
    target = tmp_path / "long" / name
    with atomic_path(target) as tmp:
        assert len(os.fsencode(tmp.name)) <= NAME_MAX
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(sem_images / "s0.png", only / name)
    assert run(["depth", "predict", only, "--out", tmp_path / "pred", "--threads", "1"]) == 0
    assert (tmp_path / "pred" / name).is_file()
    with atomic_dir(tmp_path / ("d" * 250)) as tmp:
        assert len(os.fsencode(tmp.name)) <= NAME_MAX


def test_250_character_photo_name_gets_its_roi_sets_and_tables(tmp_path, photos, capsys):
    """Outputs named after a long input (``NAME_RoiSet.zip``) are shortened with a hash, not a traceback."""
    long = tmp_path / "long"
    long.mkdir()
    shutil.copy(photos / "p0.png", long / ("y" * 246 + ".png"))
    pred = tmp_path / "pred"
    assert run(["particles", "predict", long, "--model", "watershed", "--out", pred]) == 0
    (roiset,) = (pred / "rois").iterdir()
    assert roiset.name.startswith("y" * 200) and roiset.name.endswith("_RoiSet.zip")
    assert len(os.fsencode(roiset.name)) <= 255
    assert run(["particles", "measure", pred, "--out", tmp_path / "t.csv", "--rois"]) == 0
    assert len(list((tmp_path / "t_rois").iterdir())) == 1
    capsys.readouterr()
    # an --out whose derived names (NAME_images.csv) cannot exist: refused before the work
    assert run(["particles", "measure", pred, "--out", tmp_path / ("z" * 245 + ".csv")]) == 2
    one_error_line(capsys, "longer than the 255 bytes")


def test_non_utf8_file_names_are_one_line(tmp_path, sem_images, capsys):
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(sem_images / "s0.png", os.fsdecode(os.fsencode(folder) + b"/\xff\xfe.png"))
    assert run(["depth", "predict", folder, "--out", tmp_path / "pred", "--threads", "1"]) == 2
    one_error_line(capsys, "file name is not valid UTF-8")
    assert run(["depth", "predict", sem_images, "--out", os.fsdecode(os.fsencode(tmp_path) + b"/\xff")]) == 2
    one_error_line(capsys, "not valid UTF-8")


def test_coco_nested_200000_deep_is_one_line(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    assert run(["particles", "measure", path, "--out", tmp_path / "t.csv"]) == 2
    one_error_line(capsys, "nested too deeply")


def test_rle_counts_with_non_ascii_are_one_line(tmp_path, capsys):
    ann = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"size": [64, 80], "counts": "é0ü"}}
    coco = _coco(tmp_path / "coco" / "annotations.json", [ann])
    assert run(["particles", "measure", coco, "--out", tmp_path / "t.csv"]) == 2
    one_error_line(capsys, "must be ASCII")


def test_dangling_symlink_out_is_refused_before_the_work(tmp_path, sem_images, capsys):
    out = tmp_path / "pred"
    out.symlink_to(tmp_path / "gone")
    assert run(["depth", "predict", sem_images, "--out", out]) == 2
    one_error_line(capsys, "broken symbolic link")
    with pytest.raises(InputError, match="broken symbolic link"):
        refuse_existing(out, overwrite=True)
    for args in (
        ["particles", "compare", sem_images, sem_images, "--out", out],
        ["export", sem_images, "--out", out],
        ["synth", "particles", tmp_path / "d", "--truth", out, "--n-train", "0"],
    ):
        assert run(args) == 2
        one_error_line(capsys, "broken symbolic link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "pred"]


def _replace_folder(out: str, k: int, ready) -> None:
    ready.wait()
    for _ in range(30):
        with atomic_dir(out, overwrite=True) as tmp:
            for i in range(3):
                (Path(tmp) / f"f{i}.txt").write_text(str(k))


def test_six_runs_sharing_one_out_with_overwrite(tmp_path):
    """Each run moves the old folder aside under a name of its own (one shared ``.out.old`` raced)."""
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    workers = [ctx.Process(target=_replace_folder, args=(str(out), k, ready)) for k in range(6)]
    for w in workers:
        w.start()
    ready.set()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * 6
    texts = {p.read_text() for p in out.iterdir()}
    assert len(list(out.iterdir())) == 3 and len(texts) == 1  # one run's whole output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries or .old left


@pytest.fixture
def depth_model(tmp_path):
    from micrometry.depth.methods.base import shipped_model_dir

    model = tmp_path / "depth-model"
    shutil.copytree(shipped_model_dir(), model)
    return model


def _edit_model(model: Path, change) -> None:
    document = json.loads((model / "model.json").read_text())
    change(document)
    (model / "model.json").write_text(json.dumps(document))


@pytest.mark.parametrize("version", ["2", None, 1.5, True, 0])
def test_tampered_format_version_is_one_line(depth_model, sem_images, tmp_path, capsys, version):
    _edit_model(depth_model, lambda d: d.update(format_version=version))
    assert run(["depth", "predict", sem_images, "--model", depth_model, "--out", tmp_path / "pred"]) == 2
    one_error_line(capsys, "format_version must be a whole number")


def test_depth_model_with_a_ridge_of_the_wrong_shape_is_one_line(depth_model, sem_images, tmp_path, capsys):
    _edit_model(depth_model, lambda d: d["extras"]["extra"].update(ridge=[[1.0, 2.0], [1.0], [3.0], 0.0]))
    assert run(["depth", "predict", sem_images, "--model", depth_model, "--out", tmp_path / "pred"]) == 2
    one_error_line(capsys, "ridge mean must hold 6 finite numbers")


@pytest.mark.parametrize("scale", [0, -1, "big", 1e9])
def test_particle_model_with_scale_0_is_one_line(tmp_path, photos, capsys, scale):
    from micrometry.particles.models.base import shipped_model_dir

    model = tmp_path / "particle-model"
    shutil.copytree(shipped_model_dir(), model)
    _edit_model(model, lambda d: d["settings"].update(scale=scale))
    assert run(["particles", "predict", photos, "--model", model, "--out", tmp_path / "pred"]) == 2
    one_error_line(capsys, "scale must be a number")


# =========================================================================== resources


def test_web_request_past_its_time_limit_or_without_its_client_stops():
    from micrometry.web.services import (
        CURRENT_BUDGET,
        RequestBudget,
        RequestCancelled,
        Services,
        watch_modules,
    )
    from micrometry.web.uploads import Limits

    torch = pytest.importorskip("torch")
    net = torch.nn.Conv2d(1, 1, 3)
    watch_modules({"net": net})
    budget = RequestBudget(None)
    token = CURRENT_BUDGET.set(budget)
    try:
        net(torch.zeros(1, 1, 8, 8))  # runs while the client is there
        budget.cancelled.set()
        with pytest.raises(RequestCancelled):
            net(torch.zeros(1, 1, 8, 8))  # stopped before the network pass
    finally:
        CURRENT_BUDGET.reset(token)
    net(torch.zeros(1, 1, 8, 8))  # outside a request: never stopped

    import io

    from PIL import Image

    from micrometry.web.services import RequestTooLong

    image = np.full((64, 64), 200, np.uint8)
    image[20:30, 20:30] = 30

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    services = Services(particle_model="watershed", limits=Limits(max_request_seconds=0.0))
    token = CURRENT_BUDGET.set(RequestBudget(0.0))
    try:
        time.sleep(0.01)
        with pytest.raises(RequestTooLong, match="stopped after 0 s"):
            services.particles([("a.png", buffer.getvalue())])
    finally:
        CURRENT_BUDGET.reset(token)


@pytest.mark.parametrize(
    "route, field", [("/api/particles", "file"), ("/api/frames", "files"), ("/api/correct/open", "files")]
)
def test_web_endpoint_stops_a_request_past_its_time_limit(tmp_path, route, field):
    """The app's wiring: the budget reaches the worker thread (a context variable) and ends in a 400.

    Every route that runs a model is bounded, the correction page's included."""
    import io

    from PIL import Image

    testclient = pytest.importorskip("starlette.testclient")
    from micrometry.web.app import create_app
    from micrometry.web.uploads import Limits

    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(buffer, format="PNG")
    client = testclient.TestClient(
        create_app(particle_model="watershed", limits=Limits(max_request_seconds=0.0), workspace=tmp_path)
    )
    answer = client.post(route, files={field: ("a.png", buffer.getvalue(), "image/png")})
    assert answer.status_code == 400 and "stopped after 0 s" in answer.json()["error"]


def test_web_work_stops_when_the_client_disconnects():
    from micrometry.web.bounded import run_bounded
    from micrometry.web.services import RequestCancelled, check_budget
    from micrometry.web.uploads import Limits

    steps = []

    def work():
        for _ in range(400):  # 20 s unless stopped
            check_budget()
            steps.append(1)
            time.sleep(0.05)

    class GoneClient:
        async def is_disconnected(self):
            return True

    started = time.monotonic()
    with pytest.raises(RequestCancelled):
        asyncio.run(run_bounded(GoneClient(), Limits(), work))
    assert time.monotonic() - started < 5 and len(steps) < 100


def test_pixel_limit_counts_bytes_per_pixel():
    import io

    gray = io.BytesIO()
    tifffile.imwrite(gray, np.zeros((30, 40), np.uint8))
    wide = io.BytesIO()
    tifffile.imwrite(wide, np.zeros((30, 40, 3), np.float64), photometric="rgb")
    assert decode_image(gray.getvalue(), "g.tif", max_pixels=1500).shape == (30, 40)
    with pytest.raises(ImageReadError, match="at 24 bytes per pixel"):
        decode_image(wide.getvalue(), "w.tif", max_pixels=1500)  # 1200 px, but 28.8 kB > 1500 x 3 bytes


def test_a_refused_file_is_never_read_whole(tmp_path, monkeypatch):
    """The limits are checked from the file's header before its bytes are read (a 480 MB float64 RGB
    TIFF of 20 Mpx was decoded to a 2.4 GB peak)."""
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, np.zeros((30, 40, 3), np.float64), photometric="rgb")
    monkeypatch.setattr("micrometry.io.image.MAX_PIXELS", 1500)  # 1200 px, but 28.8 kB > 1500 x 3 bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read whole"))
    with pytest.raises(ImageReadError, match="bytes per pixel"):
        read_image(path)


def test_depth_predict_checks_72x48_from_the_header(tmp_path, capsys):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # a header declaring 3000x2000 and no pixel data: decoding would fail as "truncated"
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 2000, 3000, 8, 0, 0, 0, 0))
    big = tmp_path / "imgs" / "big.png"
    big.parent.mkdir()
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match="image is 3000x2000, expected 72x48"):
        read_image(big, shape=(72, 48))
    assert run(["depth", "predict", big.parent, "--out", tmp_path / "pred", "--threads", "1"]) == 2
    one_error_line(capsys, "expected 72x48")


def test_synth_sizes_are_bounded(tmp_path, capsys):
    args = ["synth", "particles", tmp_path / "d", "--truth", tmp_path / "t"]
    assert run([*args, "--height", "100000", "--width", "100000"]) == 2
    one_error_line(capsys, "--height: must be <= 8192")
    assert not (tmp_path / "d").exists()


def test_idle_connections_are_closed():
    uvicorn = pytest.importorskip("uvicorn")
    from micrometry.web.server import IdleClosingH11

    async def app(scope, receive, send):  # pragma: no cover - never reached by a silent client
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=IdleClosingH11, timeout_keep_alive=0.5)
    config.log_level = "warning"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        for partial in (b"", b"GET / HT"):  # silent, and a request head that stops arriving
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(partial)
                started = time.monotonic()
                assert client.recv(100) == b""  # closed by the server
                assert time.monotonic() - started < 3
    finally:
        server.should_exit = True
        thread.join(10)


# =========================================================================== cosmetic


def test_float64_and_complex_tiffs_get_their_own_messages(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    ramp = np.linspace(0, 1, 48 * 64).reshape(48, 64)
    tifffile.imwrite(images / "f.tif", ramp)
    from micrometry.io.image import image_size

    assert image_size(images / "f.tif") == (48, 64)
    with pytest.warns(UserWarning, match="floating-point image scaled"):
        assert read_image(images / "f.tif").max() == 65535
    tifffile.imwrite(images / "c.tif", ramp.astype(np.complex64))
    with pytest.raises(ImageReadError, match="complex-valued image"):
        read_image(images / "c.tif")
    out = tmp_path / "pred"
    assert run(["particles", "predict", images, "--model", "watershed", "--out", out]) == 0
    err = capsys.readouterr().err
    assert "cannot identify image file" not in err and "complex-valued image" in err
    record = json.loads((out / "prediction.json").read_text())
    assert [Path(s["file"]).name for s in record["skipped"]] == ["c.tif"]


def test_sigint_exits_130_with_one_line(sem_images, tmp_path, capsys, monkeypatch):
    import micrometry.depth.predict as predict

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "predict_folder", interrupted)
    assert run(["depth", "predict", sem_images, "--out", tmp_path / "pred", "--threads", "1"]) == 130
    one_error_line(capsys, "interrupted")


def test_pixel_size_without_unit_names_the_option_once(tmp_path, capsys):
    write_image(tmp_path / "labels" / "a.png", np.zeros((8, 8), np.uint8))
    assert (
        run(["particles", "measure", tmp_path / "labels", "--out", tmp_path / "t.csv", "--pixel-size", "2"])
        == 2
    )
    line = one_error_line(capsys, "--pixel-size: needs --unit")
    assert line.count("--pixel-size") == 1


def test_numpy_overflow_warnings_do_not_leak(tmp_path, capsys):
    extreme = np.array([[-1e308, 0.0], [1e308, 5.0]])
    tifffile.imwrite(tmp_path / "x.tif", extreme)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(UserWarning, match="scaled"):
            scaled = read_image(tmp_path / "x.tif")
    assert scaled.min() == 0 and scaled.max() == 65535


def test_numpy_warnings_inside_a_command_are_not_printed(sem_images, tmp_path, capsys, monkeypatch):
    import micrometry.depth.predict as predict

    def overflowing(*args, **kwargs):
        np.float64(1e308) * np.float64(10)  # RuntimeWarning: overflow encountered
        np.zeros(2) / np.zeros(2)  # RuntimeWarning: invalid value encountered
        return 0

    monkeypatch.setattr(predict, "predict_folder", overflowing)
    assert run(["depth", "predict", sem_images, "--out", tmp_path / "pred", "--threads", "1"]) == 0
    assert "encountered" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_sigint_exits_130_and_leaves_no_output(tmp_path):
    import signal
    import subprocess
    import sys

    out, truth = tmp_path / "data", tmp_path / "truth"
    command = [sys.executable, "-m", "micrometry", "synth", "particles", str(out), "--truth", str(truth)]
    process = subprocess.Popen(
        [*command, "--n-train", "5000", "--height", "512", "--width", "512"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MICROMETRY_QUIET": "1"},
        # a runner started in the background (`cmd &`) ignores SIGINT, and its children would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # inside the work: its temporary output exists (a fixed sleep let a quiet machine finish first)
    deadline = time.monotonic() + 60
    while process.poll() is None and not any(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert process.poll() is None, "the work ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: interrupted (Ctrl-C); outputs not finished were not written"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no temporaries


@pytest.mark.parametrize(
    "args, expected",
    [
        (["depth", "predict"], "Missing argument"),
        (["depth", "predict", "x", "--bogus"], "No such option: --bogus"),
        (["depth", "predict", "x", "--out", "y", "--batch-size", "many"], "Invalid value for '--batch-size'"),
    ],
)
def test_usage_errors_are_one_line(capsys, args, expected):
    assert run(args) == 2
    captured = capsys.readouterr()
    assert "╭" not in captured.err and "Usage:" not in captured.err
    line = one_error_line_from(captured.err, expected)
    assert line.startswith("error: micrometry depth predict: ")


def one_error_line_from(err: str, expected: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(err.strip().splitlines()) == 1 and len(lines) == 1 and expected in lines[0], err
    return lines[0]


def test_the_fuzz_catches_a_destroyed_input(tmp_path, sem_images, monkeypatch):
    """bench/fuzz.py checks that inputs survive; without the CLI's check, ``--out IMGS`` would replace them."""
    import fuzz_corpus
    import micrometry.io.atomic

    fuzz_corpus.preload()
    argv = ["depth", "predict", "sem_in", "--out", "sem_in", "--overwrite", "--threads", "1"]
    outcomes = []
    for k in range(2):
        work = tmp_path / f"w{k}"
        work.mkdir()
        shutil.copytree(sem_images, work / "sem_in")
        case = fuzz_corpus.Case("options", "out is the input", argv, inputs=["sem_in"])
        outcomes.append(fuzz_corpus.run_case(case, work, timeout_s=120))
        monkeypatch.setattr(micrometry.io.atomic, "refuse_overlap", lambda outputs, inputs: None)
    kept, broken = outcomes
    assert kept.code == 2 and kept.breaks == []
    assert broken.code == 0 and "input sem_in changed" in broken.breaks  # the check can fail
