"""Outputs people read: shared options and their validation, units in column names, calibration from
metadata, the ImageJ ROI set, one warning format, --version, console messages."""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile

from helpers import TINY_UNET_OPTIONS, command_argv, particles_train_argv
from micrometry.cli import run
from micrometry.io.image import read_calibration, read_image, write_image

# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "args, option",
    [
        (["particles", "measure", "L", "--out", "t.csv", "--pixel-size", "nan"], "--pixel-size"),
        (["particles", "measure", "L", "--out", "t.csv", "--pixel-size", "inf"], "--pixel-size"),
        (["particles", "measure", "L", "--out", "t.csv", "--pixel-size", "0"], "--pixel-size"),
        (["particles", "measure", "L", "--out", "t.csv", "--pixel-size", "-1"], "--pixel-size"),
        (["particles", "measure", "L", "--out", "t.csv", "--min-score", "1.5"], "--min-score"),
        (["depth", "measure", "P", "--out", "t.csv", "--nm-per-px", "0"], "--nm-per-px"),
        (["depth", "measure", "P", "--out", "t.csv", "--nm-per-px", "inf"], "--nm-per-px"),
        (["depth", "measure", "P", "--out", "t.csv", "--top-level", "nan"], "--top-level"),
        (["particles", "compare", "A", "B", "--out", "o", "--alpha", "nan"], "--alpha"),
        (["particles", "compare", "A", "B", "--out", "o", "--alpha", "0"], "--alpha"),
        (["particles", "compare", "A", "B", "--out", "o", "--rel-threshold", "-inf"], "--rel-threshold"),
        (["particles", "train", "C", "--out", "r", "--time-budget", "nan"], "--time-budget"),
        (["particles", "train", "C", "--out", "r", "--scale", "0"], "--scale"),
        (["depth", "train", "D", "--out", "r", "--time-budget", "-1"], "--time-budget"),
        (["depth", "train", "D", "--out", "r", "--threads", "-2"], "--threads"),
        (["depth", "predict", "I", "--out", "p", "--ray-workers", "0"], "--ray-workers"),
        (["particles", "predict", "I", "--out", "p", "--batch-size", "0"], "--batch-size"),
        (["synth", "sem", "o", "--truth", "t", "--n-sites", "0"], "--n-sites"),
        (["serve", "--port", "70000"], "--port"),
    ],
)
def test_bad_numbers_are_refused_at_parse_time(tmp_path, monkeypatch, capsys, args, option):
    monkeypatch.chdir(tmp_path)
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option}: must be") and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_unit_without_pixel_size_is_an_error(tmp_path, capsys):
    write_image(tmp_path / "l.png", np.pad(np.ones((4, 4), np.uint16), 3))
    assert (
        run(command_argv("particles", "measure", tmp_path / "l.png", unit="um", out=tmp_path / "t.csv")) == 2
    )
    assert capsys.readouterr().err.startswith("error: --unit: a unit needs a pixel size")
    assert (
        run(command_argv("particles", "measure", tmp_path / "l.png", pixel_size=0.5, out=tmp_path / "t.csv"))
        == 2
    )
    assert "--pixel-size: needs --unit" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_shared_defaults_are_one_definition():
    from micrometry.options import DEFAULT_NM_PER_PX, minutes_to_seconds
    from micrometry.web import services

    assert services.Services.sem.__defaults__[-1] == DEFAULT_NM_PER_PX == 2.0
    assert (
        minutes_to_seconds(1.5) == 90 and minutes_to_seconds(0) is None and minutes_to_seconds(None) is None
    )


def test_time_budget_is_minutes_for_both_jobs(capsys):
    for job in ("depth", "particles"):
        assert run([job, "train", "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--time-budget" in text and "minutes" in text.split("--time-budget", 1)[1][:200]


# --------------------------------------------------------------------------- console


def test_version(capsys):
    from micrometry import __version__

    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"micrometry {__version__}"


def test_depth_train_help_lists_every_method_and_the_progress_columns(capsys):
    from micrometry.depth.methods import DEPTH_METHODS

    assert run(["depth", "train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in DEPTH_METHODS.list():
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name
    for column in ("map=", "depth=", "real="):
        assert column in text


def test_warnings_are_one_line_in_depth_commands_too(tmp_path, capsys):
    """A colour PNG among depth maps: Python's two-line warning format would show a source line."""
    from PIL import Image

    maps = tmp_path / "maps"
    maps.mkdir()
    rgb = np.zeros((72, 48, 3), np.uint8)
    rgb[20:50, 10:40] = (200, 100, 50)
    Image.fromarray(rgb).save(maps / "a.png")
    assert run(["depth", "measure", str(maps), "--out", str(tmp_path / "h.csv")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines and all(line.startswith("warning: ") for line in lines), lines


def test_show_warning_is_one_line(capsys):
    from micrometry.errors import show_warning

    show_warning("first line\n  second line", UserWarning, "file.py", 3)
    assert capsys.readouterr().err == "warning: first line second line\n"


# --------------------------------------------------------------------------- units in names


def _label_image(seed=0, size=96, n=6):
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    for i in range(1, n + 1):
        cy, cx = rng.uniform(12, size - 12, 2)
        a, b = rng.uniform(4, 9), rng.uniform(3, 6)
        labels[(((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1) & (labels == 0)] = i
    return labels


def test_particle_csv_headers_carry_units(tmp_path):
    write_image(tmp_path / "labels" / "a.png", _label_image())
    out = tmp_path / "um.csv"
    assert (
        run(command_argv("particles", "measure", tmp_path / "labels", pixel_size=0.5, unit="um", out=out))
        == 0
    )
    header = out.read_text().splitlines()[0].split(",")
    for name in (
        "Area_um2",
        "Perim_um",
        "Feret_um",
        "MinFeret_um",
        "Major_um",
        "Minor_um",
        "X_um",
        "Y_um",
        "EqDiam_um",
        "Angle_deg",
        "FeretAngle_deg",
        "Circ.",
        "AR",
        "Round",
        "Solidity",
        "Convexity",
    ):
        assert name in header, name
    assert "Area" not in header and "Unit" not in header
    images = (tmp_path / "um_images.csv").read_text().splitlines()[0].split(",")
    assert {"D10_n_um", "D50_n_um", "D90_v_um"} <= set(images)
    summary = pd.read_csv(tmp_path / "um_summary.csv")
    assert summary.loc[0, "Unit"] == "um" and summary.loc[0, "PixelSize"] == 0.5
    assert summary.loc[0, "Calibration"] == "--pixel-size"

    px = tmp_path / "px.csv"
    assert run(["particles", "measure", str(tmp_path / "labels"), "--out", str(px)]) == 0
    header = px.read_text().splitlines()[0].split(",")
    assert "Area_px2" in header and "Feret_px" in header
    # the same particles: calibrated areas are a quarter of the pixel areas
    np.testing.assert_allclose(pd.read_csv(out)["Area_um2"], pd.read_csv(px)["Area_px2"] * 0.25, rtol=1e-5)


def test_csv_numbers_are_rounded_and_missing_values_empty(tmp_path):
    from micrometry.particles.measure import write_table

    table = pd.DataFrame({"Label": [1, 2], "Area": [1 / 3, np.nan], "AR": [np.pi, 2.0], "Unit": "um"})
    write_table(table, tmp_path / "t.csv", unit="um")
    text = (tmp_path / "t.csv").read_text()
    assert text.splitlines() == ["Label,Area_um2,AR", "1,0.333333,3.14159", "2,,2"]


def test_tables_read_back_under_the_computing_names(tmp_path):
    from micrometry.particles.measure import read_table, write_table
    from micrometry.particles.morphometry import measure_labels

    table = measure_labels(_label_image(), pixel_size=0.2, unit="nm")
    for suffix in (".csv", ".parquet"):
        write_table(table, tmp_path / f"t{suffix}", unit="nm")
        back = read_table(tmp_path / f"t{suffix}")
        assert list(back.columns) == list(table.columns)
        assert set(back["Unit"]) == {"nm"}
        np.testing.assert_allclose(back["Feret"], table["Feret"], rtol=1e-5)


# --------------------------------------------------------------------------- calibration, float, single file


def test_pixel_size_from_tiff_metadata_and_override(tmp_path, capsys):
    labels = _label_image(1)
    tifffile.imwrite(
        tmp_path / "ij.tif", labels, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "micron"}
    )
    out = tmp_path / "t.csv"
    assert run(["particles", "measure", str(tmp_path / "ij.tif"), "--out", str(out)]) == 0  # one label file
    assert "calibration: 0.25 um/px (from the image metadata)" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "t_summary.csv")
    assert (summary.loc[0, "PixelSize"], summary.loc[0, "Unit"], summary.loc[0, "Calibration"]) == (
        0.25,
        "um",
        "metadata",
    )
    direct = pd.read_csv(out)
    assert (
        run(
            command_argv(
                "particles", "measure", tmp_path / "ij.tif", pixel_size=2, unit="nm", out=tmp_path / "o.csv"
            )
        )
        == 0
    )
    assert "calibration: 2 nm/px (from --pixel-size)" in capsys.readouterr().out
    np.testing.assert_allclose(pd.read_csv(tmp_path / "o.csv")["Feret_nm"], direct["Feret_um"] * 8, rtol=1e-5)


def test_read_calibration_kinds(tmp_path):
    a = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(
        tmp_path / "ome.tif", a, ome=True, metadata={"PhysicalSizeX": 0.13, "PhysicalSizeXUnit": "µm"}
    )
    tifffile.imwrite(tmp_path / "cm.tif", a, resolution=(20000, 20000), resolutionunit=3)
    tifffile.imwrite(tmp_path / "dpi.tif", a, resolution=(72, 72), resolutionunit=2)
    tifffile.imwrite(tmp_path / "plain.tif", a)
    write_image(tmp_path / "p.png", a)
    assert read_calibration(tmp_path / "ome.tif") == (0.13, "um")
    assert read_calibration(tmp_path / "cm.tif") == (0.5, "um")
    for name in ("dpi.tif", "plain.tif", "p.png"):  # a print resolution is no calibration
        assert read_calibration(tmp_path / name) is None


def test_float_images_are_normalised(tmp_path):
    ramp = np.linspace(-1.0, 3.0, 64 * 48, dtype=np.float32).reshape(64, 48)
    tifffile.imwrite(tmp_path / "f.tif", ramp)
    with pytest.warns(UserWarning, match="scaled"):
        image = read_image(tmp_path / "f.tif")
    assert image.dtype == np.uint16 and image.min() == 0 and image.max() == 65535
    labels = _label_image(2).astype(np.float32)  # whole numbers: read exactly, no warning
    tifffile.imwrite(tmp_path / "l.tif", labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_image(tmp_path / "l.tif"), labels.astype(np.uint16))


# --------------------------------------------------------------------------- predict: ROIs, 0 particles


def _discs(h=120, w=160):
    yy, xx = np.mgrid[:h, :w]
    image = np.full((h, w), 190.0)
    for cx, cy, r in ((40, 40, 12), (110, 50, 15), (70, 95, 10)):
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = 70
    return np.clip(image + np.random.default_rng(0).normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def test_predict_writes_an_imagej_roi_set_matching_the_labels(tmp_path):
    from skimage.draw import polygon

    from micrometry.particles.rois import read_roiset

    write_image(tmp_path / "imgs" / "a.png", _discs())
    out = tmp_path / "pred"
    assert (
        run(["particles", "predict", str(tmp_path / "imgs"), "--model", "watershed", "--out", str(out)]) == 0
    )
    labels = read_image(out / "labels" / "a.png")
    rois = read_roiset(out / "rois" / "a_RoiSet.zip")
    assert labels.max() >= 3 and sorted(rois) == sorted(str(i) for i in np.unique(labels) if i)
    for name, xy in rois.items():
        mask = np.zeros(labels.shape, bool)
        # ImageJ: pixel (col, row) is inside when its centre (col + 0.5, row + 0.5) is
        rr, cc = polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, labels.shape)
        mask[rr, cc] = True
        truth = labels == int(name)
        assert (mask & truth).sum() / (mask | truth).sum() > 0.9, name
    record = json.loads((out / "prediction.json").read_text())
    assert (
        record["particles"] == int(labels.max())
        and record["warnings"] == []
        and record["calibration"] is None
    )


def test_predict_with_no_particles_warns_and_says_so_in_the_results(tmp_path, capsys):
    write_image(tmp_path / "imgs" / "blank.png", np.full((64, 80), 128, np.uint8))
    out = tmp_path / "pred"
    assert (
        run(["particles", "predict", str(tmp_path / "imgs"), "--model", "watershed", "--out", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert "warning: no particles found in any of the 1 images" in err
    assert json.loads((out / "prediction.json").read_text())["warnings"][0].startswith("no particles found")
    assert not (out / "rois" / "blank_RoiSet.zip").exists()


def test_predict_stores_the_calibration_and_measure_uses_it(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    tifffile.imwrite(
        tmp_path / "imgs" / "a.tif", _discs(), imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"}
    )
    out = tmp_path / "pred"
    assert (
        run(["particles", "predict", str(tmp_path / "imgs"), "--model", "watershed", "--out", str(out)]) == 0
    )
    assert "calibration: 0.5 um/px" in capsys.readouterr().out
    assert json.loads((out / "prediction.json").read_text())["calibration"]["pixel_size"] == 0.5
    assert run(["particles", "measure", str(out), "--out", str(tmp_path / "m.csv")]) == 0
    assert "Area_um2" in (tmp_path / "m.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so(tmp_path, capsys):
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    write_sem_dataset(
        tmp_path / "data",
        tmp_path / "truth",
        SemSynthConfig(seed=1, n_structures=4, n_sites=2, images_per_site=2, n_test=2),
    )
    args = ["depth", "train", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--epochs", "1"]
    assert run([*args, *TINY_UNET_OPTIONS]) == 0
    capsys.readouterr()
    assert run([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nothing to resume: the run already finished all 1 epochs") and "epoch=1" in out


def test_all_three_tables_read_back(tmp_path):
    from micrometry.particles.measure import measure_source, output_paths, read_table, write_measurement

    write_image(tmp_path / "labels" / "a.png", _label_image(3))
    result = measure_source(tmp_path / "labels", pixel_size=0.1, unit="mm", n_boot=100)
    paths = write_measurement(result, tmp_path / "m.csv")
    assert paths == output_paths(tmp_path / "m.csv")
    for key in ("particles", "images", "summary"):
        back = read_table(paths[key])
        assert set(back.columns) == set(getattr(result, key).columns), key
    assert read_table(paths["images"])["D50_n"].iloc[0] == pytest.approx(
        result.images["D50_n"].iloc[0], rel=1e-5
    )


def test_measure_rois_match_the_table_rows(tmp_path):
    from micrometry.particles.rois import read_roiset

    labels = _label_image(4)
    labels[0:6, 0:6] = 50  # a border particle, left out with --exclude-edges
    write_image(tmp_path / "labels" / "a.png", labels)
    out = tmp_path / "m.csv"
    assert (
        run(
            ["particles", "measure", str(tmp_path / "labels"), "--exclude-edges", "--rois", "--out", str(out)]
        )
        == 0
    )
    table = pd.read_csv(out)
    rois = read_roiset(tmp_path / "m_rois" / "a_RoiSet.zip")
    assert sorted(rois) == sorted(str(v) for v in table["Label"]) and "50" not in rois
    assert run(["particles", "measure", str(tmp_path / "labels"), "--rois", "--out", str(out)]) == 2  # exists


@pytest.mark.slow
def test_particles_train_on_few_images_says_why_and_finished_resume_says_so(tmp_path, capsys):
    from particle_scenes import write_coco_folder

    data = write_coco_folder(tmp_path / "coco", n_images=2, height=64, width=64, n=3)
    tiny = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "crop": 32, "threads": 1}
    args = particles_train_argv(data, tmp_path / "run", **tiny)
    assert run(args) == 0
    err = capsys.readouterr().err
    # fewer than 5 images: the console says how validation is done (on the training images)
    assert "warning: only 2 image(s), fewer than 5: every annotated pixel is trained on" in err
    assert run([*args, "--resume"]) == 0
    assert capsys.readouterr().out.startswith("nothing to resume: the run already finished all 1 epochs")


def test_quiet_is_one_global_option(tmp_path, monkeypatch):
    import os

    from micrometry.progress import quiet

    monkeypatch.delenv("MICROMETRY_QUIET", raising=False)
    write_image(tmp_path / "l.png", np.pad(np.ones((4, 4), np.uint16), 3))
    assert (
        run(["--quiet", "particles", "measure", str(tmp_path / "l.png"), "--out", str(tmp_path / "t.csv")])
        == 0
    )
    assert quiet() and os.environ["MICROMETRY_QUIET"] == "1"
