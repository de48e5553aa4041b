"""Hole metrology: `depth measure` against analytic holes and the SEM simulator's true geometry;
failures reported per row and on the console; units, empty cells and Parquet in the table."""

import csv

import numpy as np
import pandas as pd
import pytest

from micrometry.cli import run
from micrometry.depth.measure import measure_hole
from micrometry.errors import InputError
from micrometry.io.image import write_image
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

UNIT_COLUMNS = [
    "depth_nm",
    "top_cd_x_nm",
    "top_cd_y_nm",
    "bottom_cd_x_nm",
    "bottom_cd_y_nm",
    "sidewall_angle_x_deg",
    "sidewall_angle_y_deg",
    "sidewall_angle_deg",
]


def tapered_hole(cx=23.6, cy=35.3, rim=(13.0, 19.0), floor=(7.0, 11.0), depth=125.0, top=155.0):
    """An elliptical hole drawn here, independently of the simulator: a straight wall from the floor
    ellipse (semi-axes ``floor``) to the rim ellipse (``rim``), flat floor and top (heights in nm)."""
    y, x = np.mgrid[0:72, 0:48].astype(float)
    # interpolate the semi-axes between floor and rim: the ellipse through (x, y) at wall fraction u
    u = np.linspace(0, 1, 2001)[:, None, None]
    ax = floor[0] + u * (rim[0] - floor[0])
    ay = floor[1] + u * (rim[1] - floor[1])
    inside = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0
    frac = np.where(inside.any(axis=0), inside.argmax(axis=0) / 2000.0, 1.0)  # first ellipse that contains it
    return top - depth + depth * frac


def test_measure_recovers_an_analytic_tapered_hole():
    nm, depth, rim, floor = 2.0, 125.0, (13.0, 19.0), (7.0, 11.0)
    m = measure_hole(tapered_hole(rim=rim, floor=floor, depth=depth), nm_per_px=nm)
    assert m["status"] == "ok" and m["note"] == ""
    assert m["depth_nm"] == pytest.approx(depth, abs=0.1)
    # the chord at fraction f of the depth: 2 * (floor + f * (rim - floor)) pixels
    chord = lambda axis, f: 2 * (floor[axis] + f * (rim[axis] - floor[axis])) * nm  # noqa: E731
    assert m["top_cd_x_nm"] == pytest.approx(chord(0, 0.9), abs=nm)
    assert m["top_cd_y_nm"] == pytest.approx(chord(1, 0.9), abs=nm)
    assert m["bottom_cd_x_nm"] == pytest.approx(chord(0, 0.1), abs=nm)
    assert m["bottom_cd_y_nm"] == pytest.approx(chord(1, 0.1), abs=nm)
    angle = lambda axis: np.degrees(np.arctan(depth / ((rim[axis] - floor[axis]) * nm)))  # noqa: E731
    assert m["sidewall_angle_x_deg"] == pytest.approx(angle(0), abs=1.0)
    assert m["sidewall_angle_y_deg"] == pytest.approx(angle(1), abs=1.0)
    assert m["sidewall_angle_deg"] == pytest.approx((angle(0) + angle(1)) / 2, abs=1.0)
    # a vertical wall reads 90 degrees, a shallow one much less
    assert measure_hole(tapered_hole(rim=(12, 18), floor=(12, 18)), nm_per_px=nm)["sidewall_angle_deg"] > 88
    assert measure_hole(tapered_hole(depth=10.0), nm_per_px=nm)["sidewall_angle_deg"] < 45


def test_measure_rejects_bad_pixel_size():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="pixel size"):
            measure_hole(tapered_hole(), nm_per_px=bad)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrology")
    write_sem_dataset(
        root / "data",
        root / "truth",
        SemSynthConfig(seed=4, n_structures=5, n_sites=2, images_per_site=2, n_test=12),
    )
    return root


def test_truth_geometry_files_carry_units_and_scale(synth):
    truth = synth / "truth"
    for name, rows in (("test_geometry.csv", 12), ("train_geometry.csv", 4), ("simulation_geometry.csv", 20)):
        table = pd.read_csv(truth / name)
        assert len(table) == rows
        assert {"file", "case", "nm_per_px", *UNIT_COLUMNS} <= set(table.columns)
        assert (table["nm_per_px"] == 2.0).all()
        assert table[UNIT_COLUMNS].notna().all().all()
        assert (table["top_cd_x_nm"] > table["bottom_cd_x_nm"]).all()
        assert table["sidewall_angle_deg"].between(60, 90).all()
    # test rows follow the test images and test_truth.csv's depths
    geometry = pd.read_csv(truth / "test_geometry.csv")
    cases = pd.read_csv(truth / "test_truth.csv")
    assert list(geometry["file"]) == list(cases["file"])
    assert np.allclose(geometry["depth_nm"], cases["hole_depth"], atol=1e-3)
    # one simulated structure has the same lateral geometry in all four cases, deeper and steeper
    sim = pd.read_csv(truth / "simulation_geometry.csv")
    first = sim[sim["file"].str.endswith("S000000.png")].sort_values("case")
    assert list(first["depth_nm"]) == [110, 120, 130, 140]
    assert first["top_cd_x_nm"].nunique() == 1 and first["sidewall_angle_deg"].is_monotonic_increasing


def test_measure_on_true_maps_matches_the_truth(synth, tmp_path, capsys):
    out = tmp_path / "holes.csv"
    assert run(["depth", "measure", str(synth / "truth/test_depth"), "--out", str(out)]) == 0
    measured = pd.read_csv(out)
    truth = pd.read_csv(synth / "truth/test_geometry.csv").set_index("file").loc[measured["file"]]
    assert (measured["status"] == "ok").all()
    errors = {c: np.abs(measured[c].to_numpy() - truth[c].to_numpy()) for c in UNIT_COLUMNS}
    assert errors["depth_nm"].max() <= 1.0  # PNGs hold whole nm
    for c in UNIT_COLUMNS[1:5]:
        assert errors[c].max() <= 2.0 + 0.5, c  # one pixel (2 nm), a little slack for the rounded bowl
    for c in UNIT_COLUMNS[5:]:
        assert errors[c].max() <= 2.0, c
    assert "12 holes: 12 fully measured, 0 partly, 0 not at all" in capsys.readouterr().out


@pytest.fixture
def awkward_maps(synth, tmp_path):
    """Three true maps plus: a flat map, a hole cut by the left border, a hole whose deepest pixel
    is a spike away from its centre lines (no floor on them)."""
    folder = tmp_path / "maps"
    for p in sorted((synth / "truth/test_depth").glob("*.png"))[:3]:
        write_image(folder / p.name, np.asarray(__import__("PIL.Image").Image.open(p)))
    write_image(folder / "flat.png", np.full((72, 48), 150, np.uint8))
    write_image(folder / "cut.png", np.rint(tapered_hole(cx=3.0)).astype(np.uint8))
    spike = tapered_hole()
    spike[30, 20] -= 25  # a deep pixel off the centre row and column
    write_image(folder / "spike.png", np.rint(spike).astype(np.uint8))
    return folder


def test_failures_are_reported_per_row_and_on_the_console(awkward_maps, tmp_path, capsys):
    out = tmp_path / "holes.csv"
    assert run(["depth", "measure", str(awkward_maps), "--out", str(out)]) == 0
    console = capsys.readouterr()
    rows = {r["file"]: r for r in csv.DictReader(open(out))}
    assert rows["flat.png"]["status"] == "failed" and rows["flat.png"]["note"] == "no hole found"
    assert (
        rows["cut.png"]["status"] == "partial"
        and "top CD x: hole runs off the image" in rows["cut.png"]["note"]
    )
    assert rows["cut.png"]["top_cd_x_nm"] == "" and float(rows["cut.png"]["top_cd_y_nm"]) > 0
    assert rows["spike.png"]["status"] == "partial"
    assert "bottom CD x: no pixel below the level on the centre line" in rows["spike.png"]["note"]
    assert rows["spike.png"]["bottom_cd_x_nm"] == ""
    for name in ("000000.png", "000001.png", "000002.png"):
        assert rows[name]["status"] == "ok" and rows[name]["note"] == ""
    assert "6 holes: 3 fully measured, 2 partly, 1 not at all" in console.out
    assert "1 without top CD x (hole runs off the image at 90%)" in console.out
    assert "1: no hole found" in console.out
    assert "warning: 3 of 6 holes not fully measured" in console.err
    # units in the header, missing values empty (never the text nan), numbers rounded
    text = out.read_text()
    header = text.splitlines()[0].split(",")
    assert header[:3] == ["file", "status", "note"] and set(UNIT_COLUMNS) <= set(header)
    assert "nan" not in text.lower()
    assert all(len(v.split(".")[-1]) <= 2 for r in rows.values() for c in UNIT_COLUMNS if (v := r[c]))


def test_parquet_table_matches_the_csv(awkward_maps, tmp_path):
    assert run(["depth", "measure", str(awkward_maps), "--out", str(tmp_path / "h.csv")]) == 0
    assert run(["depth", "measure", str(awkward_maps), "--out", str(tmp_path / "h.parquet")]) == 0
    parquet, table = pd.read_parquet(tmp_path / "h.parquet"), pd.read_csv(tmp_path / "h.csv")
    assert list(parquet.columns) == list(table.columns)
    assert parquet["top_cd_x_nm"].isna().sum() == 2  # flat and cut: nulls, not a number
    pd.testing.assert_frame_equal(parquet[UNIT_COLUMNS], table[UNIT_COLUMNS], check_dtype=False)


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf"])
def test_bad_pixel_size_is_refused(awkward_maps, tmp_path, capsys, value):
    out = tmp_path / "holes.csv"
    assert run(["depth", "measure", str(awkward_maps), "--out", str(out), "--nm-per-px", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "--nm-per-px" in err
    assert not out.exists()


def test_unknown_table_suffix_is_refused(awkward_maps, tmp_path, capsys):
    assert run(["depth", "measure", str(awkward_maps), "--out", str(tmp_path / "holes.xlsx")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err
