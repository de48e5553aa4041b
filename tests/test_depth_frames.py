"""Whole CD-SEM frames: the frame generator, the hole detector and lattice fit, per-hole depth,
defect flags and ``micrometry depth frame`` / ``synth sem-frames``."""

import csv
import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

from micrometry.cli import run
from micrometry.depth.frames import (
    analyse_frame,
    detect_holes,
    fit_lattice,
    fit_trend,
    flag_defects,
    image_rows,
    trend_at,
)
from micrometry.io.depth_tiff import read_depth_tiff, write_depth_tiff
from micrometry.io.image import read_calibration, write_image
from micrometry.synth.sem_dataset import SemSynthConfig, simulate_real
from micrometry.synth.sem_frames import FrameConfig, render_frame
from micrometry.synth.sem_geometry import GeometryConfig
from micrometry.synth.sem_physics import RealDomain


@pytest.fixture(scope="module")
def shipped():
    import torch

    from micrometry.depth.methods import load_depth_model

    torch.set_num_threads(1)
    return load_depth_model("shipped", device="cpu")


def _frame(seed=0, **kwargs):
    config = FrameConfig(height_px=360, width_px=480, **kwargs)
    return render_frame(config, np.random.default_rng(seed))


def test_frame_truth_matches_its_height_map():
    frame = _frame(seed=3, n_under_etched=2, n_not_open=2, n_merged=1, n_missing=1)
    holes = frame.holes
    assert frame.image.shape == frame.depth_map.shape == (360, 480)
    assert frame.image.dtype == np.uint8
    defects = list(holes["defect"])
    for name, count in (("under_etched", 2), ("not_open", 2), ("merged", 2), ("missing", 1)):
        assert defects.count(name) == count
    # every defect lies where the model's window fits, so that it can be scored
    assert all(holes["window_inside"][np.array(defects) != "none"])
    # the deepest point near each hole's centre is its depth (the bottom is reached inside the
    # taper); a missing hole leaves the top surface
    for i in range(len(defects)):
        x, y = int(round(holes["x_px"][i])), int(round(holes["y_px"][i]))
        if not (5 <= x < 475 and 5 <= y < 355) or defects[i] == "merged":
            continue
        deepest = frame.depth_map[y - 4 : y + 5, x - 4 : x + 5].max()
        assert deepest == pytest.approx(holes["depth_nm"][i], abs=0.05 + 0.01 * holes["depth_nm"][i])
    under = np.array(defects) == "under_etched"
    assert np.all(holes["depth_nm"][under] < 0.81 * 125 + 8)
    assert np.all(holes["depth_nm"][np.array(defects) == "not_open"] < 0.16 * 125 + 2)


@pytest.mark.parametrize("lattice", ["staggered", "square", "hexagonal"])
def test_detector_finds_every_hole_and_no_false_one(lattice):
    frame = _frame(seed=1, lattice=lattice, rotation_deg=2.0, n_missing=2, n_not_open=2)
    det = detect_holes(frame.image)
    holes = frame.holes
    truth_xy = np.column_stack([holes["x_px"], holes["y_px"]])
    real = holes["defect"] != "missing"
    found = det.present & det.inside
    # each lattice site is a true site (to the hole jitter), and each true site is found once
    dist, match = cKDTree(truth_xy).query(det.site_xy)
    away = np.all((det.site_xy > 5) & (det.site_xy < np.array([480, 360]) - 5), axis=1)
    assert dist[away].max() < 5.0  # (at the border a hole's centre may lie outside, its site inside)
    assert len(set(match[away].tolist())) == away.sum()
    # windows that clearly fit (the fitted site may differ from the true one by a fraction of a pixel)
    site = np.column_stack([holes["site_x_px"], holes["site_y_px"]])
    clear = np.all((site - [24.5, 36.5] >= 0) & (site + [24.5, 36.5] <= [480, 360]), axis=1)
    full = real & clear
    assert set(np.where(full)[0]) <= set(match[found].tolist())
    assert not np.any(found & ~real[match])  # no hole where the truth has none
    assert set(match[~det.present & det.inside].tolist()) == set(np.where(~real & clear)[0])
    centre_error = np.hypot(*(det.centre_xy[found] - truth_xy[match[found]]).T)
    assert np.median(centre_error) < 1.0


def test_lattice_fit_recovers_a_rotated_lattice_with_gaps_and_outliers():
    rng = np.random.default_rng(0)
    basis = np.array([[30.0, 0.0], [15.0, 26.0]]) @ np.array([[0.99, 0.14], [-0.14, 0.99]])
    i, j = np.meshgrid(np.arange(-8, 8), np.arange(-8, 8))
    index = np.column_stack([i.ravel(), j.ravel()])
    points = np.array([200.0, 150.0]) + index @ basis + rng.normal(0, 0.5, (len(index), 2))
    points = np.vstack([points[rng.random(len(points)) > 0.1], [[207.0, 151.0], [5.0, 400.0]]])
    lattice = fit_lattice(points)
    # the same lattice: each true vector is an integer combination of the fitted ones
    coef = np.linalg.solve(lattice.basis.T, basis.T).T
    assert np.abs(coef - np.round(coef)).max() < 0.01
    assert abs(abs(np.linalg.det(np.round(coef))) - 1) < 1e-9
    assert (
        np.abs(lattice.index_of([[200.0, 150.0]]) - np.round(lattice.index_of([[200.0, 150.0]]))).max() < 0.02
    )


OTHER_CROPS = SemSynthConfig(
    real_geometry=GeometryConfig(
        semi_axis_x=(12.6, 0.5),
        semi_axis_y=(18.0, 0.7),
        taper=(0.36, 0.5),
        centre_jitter=1.8,
        pitch=(44.0, 66.0),
        neighbour_probability=1.0,
    ),
    real=RealDomain(psf_sigma=(1.6, 1.1), dose=18.0, charging=0.09, gain=62.0, offset=38.0),
)
# Holes outside the simulation's geometry prior (bench/depth.py --variant geometry): smaller openings,
# more tapered walls, rounder bottoms.
SHIFTED_CROPS = SemSynthConfig(
    real_geometry=GeometryConfig(
        semi_axis_x=(11.8, 0.45),
        semi_axis_y=(16.8, 0.65),
        taper=(0.28, 0.40),
        bottom_rounding=(0.14, 0.24),
        centre_jitter=1.4,
        neighbour_probability=1.0,
    ),
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "grid, config, shift",
    [
        ((3, 4), None, (0, 0)),
        ((5, 3), None, (0, 0)),
        ((2, 2), OTHER_CROPS, (0, 0)),
        ((1, 5), None, (0, 0)),
        ((3, 3), OTHER_CROPS, (-2, 2)),
        ((4, 3), SHIFTED_CROPS, (0, 0)),
    ],
)
def test_a_mosaic_of_crops_gives_back_each_crops_own_prediction(shipped, grid, config, shift):
    """Small mosaics, crops of another tool and pitch, of other hole shapes, holes placed off the crops'
    centres."""
    rows, cols = grid
    crops = simulate_real(
        config or SemSynthConfig(), rows * cols, 1, np.random.default_rng(rows * 10 + cols)
    ).images
    crops = np.roll(crops, shift, axis=(1, 2))
    frame = crops.reshape(rows, cols, 72, 48).transpose(0, 2, 1, 3).reshape(rows * 72, cols * 48)
    own = shipped.predict_report(crops)[1]
    result = analyse_frame(shipped, frame)
    origin = result.detection.window_origin
    got = {}
    for k, (x0, y0) in enumerate(origin):
        if x0 % 48 == 0 and y0 % 72 == 0 and result.detection.inside[k]:
            got[(y0 // 72) * cols + x0 // 48] = k
    assert sorted(got) == list(range(rows * cols))
    for tile, k in got.items():
        assert result.holes["depth_nm"][k] == pytest.approx(own["depth_nm"][tile], abs=1e-3)
        assert result.holes["depth_high_nm"][k] == pytest.approx(own["depth_high_nm"][tile], abs=1e-3)
        assert result.holes["status"][k] in ("ok", "partial")


def test_flag_rule_finds_outliers_against_a_tilted_population():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (400, 2))
    depth = 120 + 4 * (xy[:, 0] / 500 - 1) + rng.normal(0, 1.0, 400)
    depth[:3] = [80.0, 85.0, 121.0]  # two under-etched, one normal
    depth[3:5] = [115.0, 118.0]  # the model saturates on holes that did not open...
    contrast = np.full(400, 100.0) + rng.normal(0, 5, 400)
    contrast[3:5] = [12.0, 20.0]  # ...but their image shows only a faint recess
    flags, fit = flag_defects(depth, depth + 6.0, xy, (1000, 1000), np.ones(400, bool), contrast)
    assert list(flags[:5]) == ["under_etched", "under_etched", "", "not_open", "not_open"]
    assert not flags[5:].any()
    assert fit["tilt_x"] == pytest.approx(4.0, abs=0.3)
    assert fit["sigma_nm"] == pytest.approx(1.0, abs=0.2)
    # a hole whose whole interval lies below half the expected depth is not open, whatever its contrast
    flags, _ = flag_defects(
        np.r_[depth[5:], 30.0],
        np.r_[depth[5:] + 6, 40.0],
        np.r_[xy[5:], [[500, 500]]],
        (1000, 1000),
        np.r_[np.ones(395, bool), False],
    )
    assert flags[-1] == "not_open"


def test_trend_fit_recovers_plane_and_bowl():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 511, (300, 2))
    u, v = 2 * xy[:, 0] / 511 - 1, 2 * xy[:, 1] / 511 - 1
    values = 50 + 2 * u - 3 * v + 5 * (u**2 + v**2) / 2
    fit = fit_trend(xy, values, (512, 512))
    assert [fit[k] for k in ("centre", "tilt_x", "tilt_y", "bowl")] == pytest.approx([50, 2, -3, 5], abs=1e-6)
    assert trend_at(fit, xy[:5], (512, 512)) == pytest.approx(values[:5])


def test_depth_tiff_keeps_depth_scale_and_gaps(tmp_path):
    depth = np.array([[0.0, 12.345], [np.nan, 130.0]], dtype=np.float32)
    write_depth_tiff(tmp_path / "d.tif", depth, nm_per_px=2.5)
    back = read_depth_tiff(tmp_path / "d.tif")
    assert back[0, 1] == pytest.approx(12.35, abs=0.006) and back[1, 1] == pytest.approx(130.0)
    assert np.isnan(back[1, 0])
    assert read_calibration(tmp_path / "d.tif") == (pytest.approx(2.5), "nm")


@pytest.mark.slow
def test_cli_synth_frames_then_depth_frame(tmp_path, capsys):
    frames, truth, out = tmp_path / "frames", tmp_path / "truth", tmp_path / "out"
    args = ["synth", "sem-frames", frames, "--truth", truth, "--frames", "1", "--height", "288"]
    assert run([*args, "--width", "384", "--not-open", "2", "--missing", "1", "--merged", "0"]) == 0
    assert (frames / "frame_0000.png").exists() and (truth / "frame_0000_depth.tif").exists()
    assert run(["depth", "frame", frames, "--out", out, "--threads", "1"]) == 0
    with open(out / "holes.csv") as f:
        rows = list(csv.DictReader(f))
    assert {
        "x_px",
        "y_px",
        "depth_nm",
        "depth_low_nm",
        "depth_high_nm",
        "top_cd_x_nm",
        "status",
        "defect",
    } <= set(rows[0])
    measured = [r for r in rows if r["status"] in ("ok", "partial")]
    assert measured and all(
        float(r["depth_low_nm"]) < float(r["depth_nm"]) < float(r["depth_high_nm"]) for r in measured
    )
    assert all(r["depth_nm"] == "" for r in rows if r["status"] == "border")
    assert sum(r["defect"] == "missing" for r in rows) == 1
    assert sum(r["defect"] == "not_open" for r in rows) == 2
    summary = json.loads((out / "summary.json").read_text())["frames"]["frame_0000.png"]
    assert summary["defects"]["not_open"] == 2 and summary["statistics"]["depth_nm"]["n"] > 10
    assert 100 < summary["statistics"]["depth_nm"]["mean"] < 150
    depth = read_depth_tiff(out / "frame_0000_depth.tif")
    assert depth.shape == (288, 384) and 100 < np.nanmax(depth) < 200
    # bad inputs: one line, exit 2
    capsys.readouterr()
    assert run(["depth", "frame", tmp_path / "nope", "--out", tmp_path / "o2"]) == 2
    assert "error:" in capsys.readouterr().err
    blank = tmp_path / "blank"
    write_image(blank / "flat.png", np.full((200, 200), 90, np.uint8))
    assert run(["depth", "frame", blank, "--out", tmp_path / "o3"]) == 2
    assert not (tmp_path / "o3").exists()


@pytest.mark.slow
def test_web_frames_service_on_the_sample_frame():
    from micrometry.web import samples
    from micrometry.web.services import Services

    body = Services("shipped").frames(list(samples.frame_samples()), nm_per_px=2.0)
    assert body["count"] == 1
    frame = body["frames"][0]
    assert frame["overview"].startswith("data:image/png;base64,") and frame["histograms"].startswith(
        "data:image/png"
    )
    assert frame["measured"] > 50 and 100 < frame["depth_mean_nm"] < 150
    assert (
        frame["defects"]["missing"] == 1
        and frame["defects"]["not_open"] == 2
        and frame["defects"]["merged"] == 2
    )
    defect_column = body["flagged"]["columns"].index("defect")
    assert sorted({row[defect_column] for row in body["flagged"]["rows"]}) == [
        "merged",
        "missing",
        "not_open",
        "under_etched",
    ]
    assert body["csv"].startswith("data:text/csv") and body["summary"].startswith("data:application/json")


@pytest.mark.slow
def test_report_of_a_depth_frame_folder(tmp_path):
    frames, out = tmp_path / "frames", tmp_path / "out"
    frame = _frame(seed=4, n_not_open=1, n_missing=1, n_merged=0, n_under_etched=1)
    write_image(frames / "f1.png", frame.image)
    assert run(["depth", "frame", frames, "--out", out, "--threads", "1"]) == 0
    assert run(["report", out, "--out", tmp_path / "r.html"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Frame f1.png" in html and html.count("data:image/png;base64") == 2
    assert "not open" in html and "frames.csv" in html
    # the frames moved: the report says so and still has the tables
    (frames / "f1.png").rename(tmp_path / "elsewhere.png")
    assert run(["report", out, "--out", tmp_path / "r2.html"]) == 0
    assert "was not found" in (tmp_path / "r2.html").read_text()


def test_a_data_bar_is_left_out():
    frame = _frame(seed=6, data_bar_px=60, n_missing=1, n_not_open=1)
    assert frame.image.shape == frame.depth_map.shape == (360, 480)
    assert (frame.image[-60:] == 0).mean() > 0.5 and (frame.image[-60:] == 255).any()
    assert np.isnan(frame.depth_map[-60:]).all() and np.isfinite(frame.depth_map[:300]).all()
    assert image_rows(frame.image) == (0, 300)
    assert image_rows(frame.image[::-1])[0] == 60  # a bar at the top
    assert image_rows(_frame(seed=6).image) == (0, 360)
    assert frame.holes["y_px"].max() < 300


@pytest.mark.slow
def test_frame_with_a_data_bar_finds_the_holes_above_it(shipped):
    frame = _frame(seed=6, data_bar_px=60, n_missing=1, n_not_open=1, n_merged=0, n_under_etched=0)
    result = analyse_frame(shipped, frame.image)
    holes = result.holes
    assert holes["y_px"].max() < 300 and result.summary["image_rows"] == [0, 300]
    assert np.isnan(result.depth_map[300:]).all() and np.isfinite(result.depth_map[:300]).any()
    assert list(holes["defect"]).count("missing") == 1 and list(holes["defect"]).count("not_open") == 1
    measured = np.isin(holes["status"], ("ok", "partial"))
    truth_inside = frame.holes["window_inside"] & (frame.holes["defect"] != "missing")
    assert measured.sum() == pytest.approx(truth_inside.sum(), abs=2)


def test_under_etched_needs_the_model_and_the_image_to_agree_when_the_depth_alone_is_not_enough():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 1000, (300, 2))
    depth = 125 + rng.normal(0, 2.0, 300)
    bottom = np.exp(np.log(40.0) + rng.normal(0, 0.02, 300))
    depth[:2] = [125 - 6.5, 125 - 6.5]  # about 3 sigma below: not enough alone
    bottom[0] = 40.0 * np.exp(0.2)  # ...but its centre is much brighter than the trend
    flags, _ = flag_defects(depth, depth + 3.0, xy, (1000, 1000), np.ones(300, bool), None, bottom)
    assert flags[0] == "under_etched" and flags[1] == ""
    assert not flags[2:].any()
