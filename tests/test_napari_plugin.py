"""The napari plug-in, driven headless: manifest, reader, writers, samples (napari's ViewerModel) and the
widget (Qt offscreen): segment, measure, fine-tune."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

with warnings.catch_warnings():  # napari's and npe2's pydantic models warn about pydantic's V1 API
    warnings.simplefilter("ignore", DeprecationWarning)
    import npe2
    from napari.components import ViewerModel

from micrometry.napari_plugin import reader, samples, writer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*Pydantic V2.0:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """napari's plug-in manager with the installed plug-ins (a Viewer does this when it starts)."""
    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm


SHOTS = os.environ.get("MICROMETRY_SCREENSHOTS")  # a folder: the widget's screenshots are kept there


def scene(index: int = 0, mode: str = "brightfield", size=(192, 256)):
    from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

    rendered = render_image(
        SuspensionParams(height=size[0], width=size[1]), image_rng(1, "napari", index), mode
    )
    return rendered.image, rendered.labels.astype(np.int32)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two label images with the same particles, whatever their ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


# --------------------------------------------------------------------------- manifest


def test_npe2_validates_the_manifest_and_its_imports():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "micrometry", "--imports"],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert out.returncode == 0 and "valid" in out.stdout, out.stdout + out.stderr


def test_napari_finds_every_contribution(plugins):
    manifest = plugins.get_manifest("micrometry")
    c = manifest.contributions
    assert [w.command for w in c.widgets] == ["micrometry.segmentation_widget"]
    assert {w.display_name for w in c.writers} == {"ImageJ ROI set", "COCO annotations"}
    from micrometry.synth.particle_optics import MODES

    assert {s.key for s in c.sample_data} == set(MODES)


# --------------------------------------------------------------------------- reader


def predict(tmp_path: Path, n: int = 2) -> tuple[Path, Path, list[np.ndarray]]:
    from micrometry.io.image import write_image
    from micrometry.particles.models.base import load_particle_model
    from micrometry.particles.predict import predict_folder

    images = tmp_path / "photos"
    photos = []
    for i in range(n):
        image, _ = scene(i)
        write_image(images / f"p{i}.png", image)
        photos.append(image)
    pred = tmp_path / "PRED"
    predict_folder(load_particle_model("watershed"), images, pred)
    return images, pred, photos


def test_reader_opens_a_prediction_folder_with_its_images(tmp_path):
    from micrometry.particles.label_sources import read_label_image

    images, pred, photos = predict(tmp_path)
    read = reader.get_reader(str(pred))
    assert read is not None
    layers = read(str(pred))
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("p0", "image"),
        ("p0 labels", "labels"),
        ("p1", "image"),
        ("p1 labels", "labels"),
    ]
    np.testing.assert_array_equal(layers[0][0], photos[0])
    np.testing.assert_array_equal(layers[1][0], read_label_image(pred / "labels" / "p0.png"))
    assert layers[1][0].max() >= 2
    # its COCO results file: the same particles (ids by score), labels only
    results = reader.get_reader(str(pred / "results.json"))(str(pred / "results.json"))
    assert [meta["name"] for _, meta, _ in results] == ["p0 labels", "p1 labels"]
    assert same_partition(results[0][0], layers[1][0])
    # several label images at once
    both = [str(pred / "labels" / "p0.png"), str(pred / "labels" / "p1.png")]
    assert [meta["name"] for _, meta, _ in reader.get_reader(both)(both)] == ["p0 labels", "p1 labels"]
    # the images moved away: the labels alone, and a warning saying so
    images.rename(tmp_path / "elsewhere")
    with pytest.warns(UserWarning, match="not found"):
        layers = reader.read(str(pred))
    assert [kind for _, _, kind in layers] == ["labels", "labels"]


def test_reader_through_napari_opens_coco_and_label_images(tmp_path):
    from micrometry.io.image import write_image

    image, labels = scene(3)
    written = writer.write_coco(
        str(tmp_path / "data" / "annotations.json"),
        [(image, {"name": "a"}, "image"), (labels, {"name": "a labels"}, "labels")],
    )
    assert written == [
        str(tmp_path / "data" / "annotations.json"),
        str(tmp_path / "data" / "images" / "a.png"),
    ]
    viewer = ViewerModel()
    viewer.open(str(tmp_path / "data"), plugin="micrometry")
    assert [layer.name for layer in viewer.layers] == ["a", "a labels"]
    np.testing.assert_array_equal(viewer.layers["a"].data, image)
    assert same_partition(np.asarray(viewer.layers["a labels"].data), labels)
    # a label image by its name; a folder micrometry does not know is left to others
    write_image(tmp_path / "b_labels.png", labels.astype(np.uint16))
    viewer.open(str(tmp_path / "b_labels.png"), plugin="micrometry")
    np.testing.assert_array_equal(viewer.layers["b labels"].data, labels)
    (tmp_path / "other").mkdir()
    assert reader.get_reader(str(tmp_path / "other")) is None
    (tmp_path / "x.json").write_text('{"not": "coco"}')
    assert reader.get_reader(str(tmp_path / "x.json")) is None


def test_reader_refuses_a_photo_named_like_labels(tmp_path):
    from micrometry.errors import ImageReadError
    from micrometry.io.image import write_image

    image, _ = scene(4)
    write_image(tmp_path / "c_labels.png", image)
    with pytest.raises(ImageReadError, match="photo"):
        reader.read(str(tmp_path / "c_labels.png"))


# --------------------------------------------------------------------------- writers


def test_roiset_writer_round_trips_every_particle(tmp_path):
    from micrometry.particles.rois import polygons_to_labels, read_roiset

    _, labels = scene(5)
    viewer = ViewerModel()
    viewer.add_labels(labels, name="s labels")
    saved = viewer.layers.save(str(tmp_path / "s_RoiSet.zip"), selected=False, plugin="micrometry")
    assert saved == [str(tmp_path / "s_RoiSet.zip")]
    rois = read_roiset(tmp_path / "s_RoiSet.zip")
    ids = sorted(int(k) for k in rois)
    assert ids == sorted(np.unique(labels[labels > 0]).tolist())
    refilled = polygons_to_labels([rois[str(i)] for i in ids], labels.shape)
    assert same_partition(refilled, labels)
    assert writer.write_roiset(str(tmp_path / "empty.zip"), np.zeros((8, 8), np.int32), {}) == []
    with pytest.raises(Exception, match="2-D"):
        writer.write_roiset(str(tmp_path / "3d.zip"), np.zeros((2, 8, 8), np.int32), {"name": "stack"})


def test_coco_writer_writes_a_dataset_micrometry_trains_on(tmp_path):
    from micrometry.io.coco import load_coco
    from micrometry.particles.training_data import load_training_set

    layers = []
    for i in range(2):
        image, labels = scene(6 + i)
        layers += [(image, {"name": f"im{i}"}, "image"), (labels, {"name": f"im{i} labels"}, "labels")]
    files = writer.write_coco(str(tmp_path / "set" / "annotations.json"), layers)
    assert len(files) == 3
    dataset = load_coco(tmp_path / "set" / "annotations.json", tmp_path / "set" / "images")
    assert [im.file_name for im in dataset.images] == ["im0.png", "im1.png"]
    for im, labels in zip(dataset.images, [layers[1][0], layers[3][0]]):
        assert same_partition(dataset.labels(im.id), labels)
    assert len(load_training_set(tmp_path / "set").images) == 2
    # labels alone: annotations only, with the image's name and size
    _, labels = scene(8)
    assert writer.write_coco(str(tmp_path / "only.json"), [(labels, {"name": "z labels"}, "labels")]) == [
        str(tmp_path / "only.json")
    ]
    only = load_coco(tmp_path / "only.json", check_files=False)
    assert (
        only.images[0].file_name == "z.png" and (only.images[0].height, only.images[0].width) == labels.shape
    )


# --------------------------------------------------------------------------- samples


def test_one_sample_per_imaging_mode_through_napari():
    from micrometry.synth.particle_optics import MODES

    viewer = ViewerModel()
    for mode in MODES:
        viewer.open_sample("micrometry", mode)
    assert [layer.name for layer in viewer.layers] == [f"synthetic {m}" for m in MODES]
    means = [float(layer.data.mean()) for layer in viewer.layers]
    assert all(
        layer.data.shape == samples.SAMPLE_SHAPE and layer.data.dtype == np.uint8 for layer in viewer.layers
    )
    assert len({round(m) for m in means}) >= 5  # the modes look different
    np.testing.assert_array_equal(samples.brightfield()[0][0], viewer.layers[0].data)  # seeded


# --------------------------------------------------------------------------- widget


@pytest.fixture(scope="module")
def qapp():
    from qtpy.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def segment(widget, qapp, timeout: float = 120) -> None:
    """Click Segment and wait for the worker thread."""
    widget.segment()
    deadline = time.monotonic() + timeout
    while widget.busy and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.02)
    qapp.processEvents()
    assert not widget.busy, "segmentation did not finish"


def shot(widget, path: Path) -> None:
    hint = widget.sizeHint()  # what the layout asks for
    widget.resize(max(420, hint.width()), max(700, hint.height()))
    image = widget.grab()
    assert image.width() > 100 and image.save(str(path))
    if SHOTS:
        image.save(str(Path(SHOTS) / path.name))


def test_widget_segments_and_measures(qapp, tmp_path):
    from micrometry.napari_plugin.widget import SegmentationWidget

    image, truth = scene(9, size=(384, 512))
    viewer = ViewerModel()
    viewer.add_image(image, name="photo")
    widget = SegmentationWidget(viewer)
    assert widget.image_combo.currentText() == "photo"
    widget.model_combo.setCurrentText("watershed")
    segment(widget, qapp)
    labels = np.asarray(viewer.layers["photo labels"].data)
    n = int(labels.max())
    assert abs(n - int(truth.max())) <= 2 and n > 3
    assert widget.labels_combo.currentText() == "photo labels"
    assert len(widget.table) == n and widget.table_view.rowCount() == n
    assert "Area_px2" in widget.table and "D50" in widget.summary.text()
    assert "too few" in widget.summary.text()  # the count adequacy, in the widget
    assert f"{int(widget.table['Agglomerate'].sum())} agglomerates" in widget.summary.text()
    # calibrate, delete a particle (a correction), measure again
    widget.pixel_size.setValue(0.5)
    widget.unit.setCurrentText("um")
    viewer.layers["photo labels"].data = np.where(labels == 1, 0, labels)
    widget.measure()
    assert len(widget.table) == n - 1 and "Area_um2" in widget.table
    assert "um" in widget.summary.text()
    # a second segmentation replaces the labels layer, it does not add one
    segment(widget, qapp)
    assert [layer.name for layer in viewer.layers] == ["photo", "photo labels"]
    # a diameter the watershed cannot take: said in the widget, no exception
    widget.diameter.setValue(20)
    segment(widget, qapp)
    assert widget.status.text().startswith("error:") and "diameter" in widget.status.text()
    shot(widget, tmp_path / "widget_watershed.png")


@pytest.mark.slow
def test_widget_segments_with_the_shipped_model_then_fine_tunes(qapp, tmp_path):
    from micrometry.napari_plugin.widget import SegmentationWidget

    viewer = ViewerModel()
    viewer.open_sample("micrometry", "phase")
    widget = SegmentationWidget(viewer)
    segment(widget, qapp)  # shipped, automatic diameter
    name = "synthetic phase labels"
    labels = np.asarray(viewer.layers[name].data)
    assert labels.max() > 10 and "estimated" in widget.status.text()
    shot(widget, tmp_path / "widget_segmented.png")

    widget.budget.setValue(0.2)
    widget.train_threads = 1
    widget.finetune()
    assert widget.training and widget.finetune_button.text() == "Stop fine-tuning"
    seen = set()
    deadline = time.monotonic() + 300
    while widget.training and time.monotonic() < deadline:
        qapp.processEvents()
        seen.add(widget.progress.value())
        if 30 <= widget.progress.value() <= 90 and not (tmp_path / "widget_training.png").exists():
            shot(widget, tmp_path / "widget_training.png")
        time.sleep(0.05)
    shot(widget, tmp_path / "widget_finetuned.png")
    assert not widget.training, "fine-tuning did not finish in 5 minutes"
    assert widget.progress.value() == 100 and len(seen) > 3, widget.status.text()
    assert (tmp_path / "widget_training.png").exists()  # the bar moved through the budget
    assert (widget.run_dir / "checkpoints").is_dir() and "trained" in widget.status.text()
    assert widget.model_combo.currentText() == str(widget.run_dir)
    segment(widget, qapp)  # with the fine-tuned model
    assert np.asarray(viewer.layers[name].data).max() > 10, widget.status.text()


@pytest.mark.slow
def test_napari_docks_the_widget(qapp):
    """In a real (hidden) napari window, Plugins > Particles makes the widget on that viewer."""
    import napari

    from micrometry.napari_plugin.widget import SegmentationWidget

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # napari's theme detection on Qt5, XDG paths
        viewer = napari.Viewer(show=False)
    try:
        _, widget = viewer.window.add_plugin_dock_widget("micrometry", "Particles")
        assert isinstance(widget, SegmentationWidget)
        assert widget.model_combo.currentText() == "shipped" and widget.image_combo.count() == 0
    finally:
        viewer.close()
