"""The Python API (micrometry.api): the issue's snippet as written, the README's, the doctests, and that
every function gives what the CLI gives for the same input."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import micrometry as mm
from micrometry.errors import DatasetError, InputError

ROOT = Path(__file__).resolve().parents[1]

# Issue 25's snippet, verbatim.
ISSUE_SNIPPET = """\
import micrometry as mm
model = mm.load_model("shipped")              # or a run folder / exported model folder, or "watershed"
seg = model.segment(image, diameter=None)     # seg.labels (2-D int array), seg.scores, seg.reliable, seg.info
table = mm.measure(seg.labels, pixel_size=0.5, unit="um")   # pandas DataFrame, the CLI's columns
psd = mm.size_distribution(table)             # number- and volume-weighted D10/D50/D90 with CIs
result = mm.compare(table_a, table_b)         # the batch comparison the CLI prints
depth = mm.load_depth_model("shipped").predict(sem_images)   # (N, 72, 48) float depth maps
holes = mm.hole_metrology(depth, nm_per_px=2.0)              # DataFrame
"""


def particle_image(mode: str = "brightfield", index: int = 0, size: tuple[int, int] = (192, 256)):
    """A synthetic photo and its true labels (micrometry.synth)."""
    from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

    rendered = render_image(SuspensionParams(height=size[0], width=size[1]), image_rng(0, "api", index), mode)
    return rendered.image, rendered.labels


def sem_images(n: int = 4):
    """``n`` synthetic real-domain SEM images and their true hole depths."""
    from micrometry.synth.sem_dataset import SemSynthConfig, simulate_real

    real = simulate_real(SemSynthConfig(), n_sites=n, per_site=1, rng=np.random.default_rng(3))
    return real.images, real.hole_depth


@pytest.fixture(scope="module")
def givens():
    """What the snippet takes as given: a photo, two batches' tables, SEM images."""
    image, _ = particle_image()
    _, truth_a = particle_image(index=1)
    _, truth_b = particle_image(index=2)
    images, depths = sem_images()
    return {
        "image": image,
        "table_a": mm.measure(truth_a, pixel_size=0.5, unit="um"),
        "table_b": mm.measure(truth_b, pixel_size=0.5, unit="um"),
        "sem_images": images,
        "true_depth_nm": depths,
    }


def check_snippet_results(ns: dict) -> None:
    seg, table, psd, result, depth, holes = (
        ns[k] for k in ("seg", "table", "psd", "result", "depth", "holes")
    )
    assert seg.labels.shape == ns["image"].shape and np.issubdtype(seg.labels.dtype, np.integer)
    assert 3 <= seg.count == int(seg.labels.max()) == len(seg.scores)
    assert seg.reliable is True and seg.info["reliable"] is True and "diameter_px" in seg.info
    assert len(table) == seg.count and {"Label", "Area_um2", "Feret_um", "EqDiam_um", "Circ."} <= set(table)
    assert list(psd.index.get_level_values(0).unique()) == ["number", "volume"]
    assert (psd["ci_low"] <= psd["value"]).all() and (psd["value"] <= psd["ci_high"]).all()
    assert (psd["unit"] == "um").all() and (psd["count"] == seg.count).all()
    assert {"descriptor", "changed", "verdict"} <= set(result) and len(result) >= 10
    assert depth.shape == (len(ns["sem_images"]), 72, 48) and depth.dtype == np.float32
    assert list(holes["status"]) == ["ok"] * len(depth)
    # the shipped depth model reads these holes' depth to within a few nm (docs/depth.md: RMSE ~4)
    assert np.abs(holes["depth_nm"].to_numpy() - ns["true_depth_nm"]).max() < 15


def test_issue_snippet_runs_as_written(givens):
    ns = {k: v for k, v in givens.items()}
    with pytest.warns(UserWarning, match="ISO 13322-1"):  # a few dozen particles: D90 is imprecise
        exec(ISSUE_SNIPPET, ns)
    check_snippet_results(ns)


def test_readme_from_python_section_runs(givens):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns = {k: v for k, v in givens.items()}
    with pytest.warns(UserWarning, match="ISO 13322-1"):
        exec(code, ns)
    check_snippet_results(ns)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*ISO 13322-1")  # the examples' few hundred particles
def test_api_docstring_examples_run():
    """The numpydoc Examples of micrometry.api and of docs/api.md run as doctests."""
    import micrometry.api

    result = doctest.testmod(micrometry.api, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 30 and result.failed == 0
    result = doctest.testfile(
        str(ROOT / "docs" / "api.md"), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted >= 15 and result.failed == 0


def test_measure_and_size_distribution_match_the_cli(tmp_path):
    """mm.measure's table is `particles measure`'s (minus the Image column); mm.size_distribution's
    figures are its summary's."""
    from micrometry.cli import run
    from micrometry.io.image import write_image

    _, labels = particle_image(mode="phase", index=4)
    write_image(tmp_path / "labels" / "a.png", labels.astype(np.uint16))
    out = tmp_path / "a.csv"
    assert (
        run(
            ["particles", "measure", tmp_path / "labels", "--out", out, "--pixel-size", "0.5", "--unit", "um"]
        )
        == 0
    )
    cli = pd.read_csv(out)
    api = mm.measure(labels, pixel_size=0.5, unit="um")
    assert list(cli.columns) == ["Image", *api.columns]
    numeric = api.select_dtypes("number").columns
    np.testing.assert_allclose(cli[numeric].to_numpy(float), api[numeric].to_numpy(float), rtol=1e-5)
    summary = pd.read_csv(tmp_path / "a_summary.csv")
    with pytest.warns(UserWarning, match="ISO 13322-1"):  # too few particles: as the CLI warns
        psd = mm.size_distribution(api)
    for weighting, tag in (("number", "n"), ("volume", "v")):
        for p in ("D10", "D50", "D90"):
            row = psd.loc[(weighting, p)]
            got = [row["value"], row["ci_low"], row["ci_high"]]
            want = [summary[f"{p}_{tag}{s}_um"].iloc[0] for s in ("", "_low", "_high")]
            np.testing.assert_allclose(got, want, rtol=1e-5)
            if p != "D10":  # the count adequacy of D50 and D90, as the summary states it
                np.testing.assert_allclose(
                    row["precision"], summary[f"Precision_{p}_{tag}"].iloc[0], rtol=1e-5
                )
                assert row["count_needed"] == summary[f"CountNeeded_{p}_{tag}"].iloc[0]
    assert not psd["adequate"].any() and bool(summary["CountAdequate"].iloc[0]) is False
    # a table read back from the CLI's file gives the same distribution
    with pytest.warns(UserWarning, match="ISO 13322-1"):
        back = mm.size_distribution(out)  # sizes rounded to 6 digits in the CSV
    pd.testing.assert_frame_equal(
        back.drop(columns="count_needed"), psd.drop(columns="count_needed"), rtol=1e-4
    )
    np.testing.assert_allclose(
        back["count_needed"].astype(float), psd["count_needed"].astype(float), rtol=1e-3
    )


def test_measure_calibration_and_edges():
    labels = np.zeros((40, 60), np.int32)
    labels[10:20, 10:30] = 1
    labels[0:5, 50:55] = 2  # touches the border
    px = mm.measure(labels)
    assert list(px["Area_px2"]) == [200, 25] and "Unit" not in px
    assert list(mm.measure(labels, exclude_edges=True)["Label"]) == [1]
    assert mm.measure(labels, pixel_size=2.0, unit="nm")["Area_nm2"].iloc[0] == 800
    empty = mm.size_distribution(mm.measure(np.zeros((8, 8), np.int32), pixel_size=0.5, unit="um"))
    assert (empty["count"] == 0).all() and (empty["unit"] == "um").all() and empty["value"].isna().all()
    with pytest.raises(InputError, match="needs --unit"):
        mm.measure(labels, pixel_size=0.5)
    with pytest.raises(InputError, match="needs a pixel size"):
        mm.measure(labels, unit="um")


def test_compare_matches_the_cli(tmp_path, givens):
    from micrometry.cli import run
    from micrometry.particles.measure import write_table

    a, b = givens["table_a"], givens["table_b"]
    paths = []
    for name, table in (("a", a), ("b", b)):
        write_table(table, tmp_path / f"{name}.csv")
        paths.append(tmp_path / f"{name}.csv")
    assert run(["particles", "compare", *paths, "--out", tmp_path / "AvsB"]) == 0
    cli = pd.read_csv(tmp_path / "AvsB" / "compare.csv")
    api = mm.compare(a, b)
    assert list(api["descriptor"]) == list(cli["descriptor"])
    assert list(api["changed"]) == list(cli["changed"]) and list(api["verdict"]) == list(cli["verdict"])
    assert list(mm.compare(*paths)["verdict"]) == list(api["verdict"])  # files work too


def test_segment_diameter_and_model_choice():
    image, truth = particle_image(index=5)
    model = mm.load_model("shipped")
    given = model.segment(image, diameter=20)
    assert given.info["diameter_source"] == "given (--diameter)" and given.info["diameter_px"] == 20
    assert model.segment(image).info["diameter_source"] == "estimated"
    # the watershed takes no diameter, and says so
    watershed = mm.load_model("watershed")
    assert abs(watershed.segment(image).count - int(truth.max())) <= 3
    with pytest.raises(InputError, match="diameter"):
        watershed.segment(image, diameter=20)
    with pytest.raises(InputError, match="diameter"):
        model.segment(image, diameter=0)


def test_segment_judges_reliability_as_predict_does():
    """A texture the shipped model cuts into dozens of blobs (a reticulated foam): reliable False, the
    reason, a warning."""
    from micrometry.particles.reliability import assess_reliability
    from particle_scenes import foam

    texture = foam(np.random.default_rng(1), (192, 240))
    with pytest.warns(UserWarning, match="unreliable segmentation: .*texture"):
        seg = mm.load_model("shipped").segment(texture)
    assert seg.reliable is False and seg.count > 20 and "texture" in seg.info["reason"]
    assert seg.info["reliability"] == assess_reliability(seg.labels, seg.scores, seg.info).metrics


@pytest.mark.parametrize("model", ["watershed", "shipped"])
def test_scale_bar_calibrates_and_is_left_out(model):
    """An SEM image of six discs above a data bar reading '500 nm' (4 nm/px), as --pixel-size auto."""
    from micrometry.io.scalebar import ScaleBarError, font_paths
    from micrometry.synth.databar import DataBarStyle, draw_databar, sem_discs

    field, _ = sem_discs()
    image, truth = draw_databar(field, 4.0, "nm", DataBarStyle(font=font_paths()[0]))
    bar = mm.read_scale_bar(image)
    assert bar.pixel_size == pytest.approx(truth.pixel_size, rel=0.01) and bar.unit == "nm"
    seg = mm.load_model(model).segment(image, scale_bar=bar)
    assert seg.count == 6 and not seg.labels[bar.band_rows[0] :].any()
    assert seg.info["data_bar_rows"] == list(bar.band_rows)
    table = mm.measure(seg.labels, pixel_size=bar.pixel_size, unit=bar.unit)
    assert table["EqDiam_nm"].median() == pytest.approx(208, rel=0.05)  # discs of radius 26 px
    with pytest.raises(ScaleBarError):
        mm.read_scale_bar(field)  # no data bar: refused, never guessed


def test_segment_takes_files_and_colour(tmp_path):
    from micrometry.io.image import ColourImageWarning, write_image

    image, _ = particle_image(index=6)
    model = mm.load_model("watershed")
    expected = model.segment(image).labels
    write_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(model.segment(tmp_path / "a.png").labels, expected)
    rgb = np.stack([image, image, image], axis=-1)
    np.testing.assert_array_equal(model.segment(rgb).labels, expected)
    tinted = rgb.copy()
    tinted[..., 0] //= 2
    with pytest.warns(ColourImageWarning):
        model.segment(tinted)
    with pytest.raises(InputError, match="unsupported image shape"):
        model.segment(np.zeros((3, 32, 32, 5), np.uint8))


def test_load_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown particle model 'nope'.*watershed"):
        mm.load_model("nope")
    with pytest.raises(InputError, match="does not take"):
        mm.load_model("shipped", colour="red")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        mm.load_depth_model(tmp_path / "empty")
    with pytest.raises(InputError):
        mm.load_model(tmp_path / "empty")


def test_depth_model_shapes_and_report():
    images, _ = sem_images(2)
    model = mm.load_depth_model("shipped")
    one = model.predict(images[0])
    assert one.shape == (72, 48)
    np.testing.assert_allclose(one, model.predict(list(images))[0], atol=1e-4)
    with pytest.raises(DatasetError, match="expected 72x48"):
        model.predict(np.zeros((1, 64, 64), np.uint8))
    report = model.report(images)
    assert list(report.columns) == [
        "depth_nm",
        "depth_low_nm",
        "depth_high_nm",
        "ood_score",
        "unlike_training_data",
    ]
    assert (report["depth_low_nm"] < report["depth_nm"]).all() and not report["unlike_training_data"].any()


def test_hole_metrology_matches_depth_measure(tmp_path):
    from micrometry.cli import run
    from micrometry.io.image import write_image

    y, x = np.mgrid[:72, :48]
    maps = []
    for radius in (12, 16):
        r = np.hypot(y - 35.5, x - 23.5)
        maps.append(np.rint(np.clip(150 - 100 * (radius - r) / 8, 50, 150)))
    maps = np.stack(maps)
    for i, m in enumerate(maps):
        write_image(tmp_path / "pred" / f"{i}.png", m.astype(np.uint8))
    assert run(["depth", "measure", tmp_path / "pred", "--out", tmp_path / "holes.csv"]) == 0
    cli = pd.read_csv(tmp_path / "holes.csv")
    api = mm.hole_metrology(maps, nm_per_px=2.0, names=["0.png", "1.png"])
    pd.testing.assert_frame_equal(api.fillna(""), cli.fillna(""), check_dtype=False)
    assert "file" not in mm.hole_metrology(maps[0])
    with pytest.raises(InputError, match="bottom_fraction"):
        mm.hole_metrology(maps, top_fraction=0.1, bottom_fraction=0.5)
    with pytest.raises(InputError, match="pixel size"):
        mm.hole_metrology(maps, nm_per_px=0)
    with pytest.raises(InputError, match="2 names"):
        mm.hole_metrology(maps[:1], names=["a", "b"])


def test_import_micrometry_stays_light():
    """`import micrometry` loads no numpy, torch or pandas; the API loads on first use."""
    code = (
        "import sys, micrometry as mm\n"
        "heavy = [m for m in ('numpy', 'torch', 'pandas', 'micrometry.api') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(mm.load_model) and 'micrometry.api' in sys.modules and 'torch' not in sys.modules\n"
        "assert 'load_model' in dir(mm)\n"
        "try:\n    mm.nothing\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "has no attribute 'nothing'" in out.stdout
