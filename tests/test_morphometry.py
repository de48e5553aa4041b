"""Morphometry: analytic shapes, agreement with scikit-image, calibration, PSD, the measure command."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops

from helpers import command_argv
from micrometry.cli import run
from micrometry.geometry import calipers
from micrometry.io.image import write_image
from micrometry.particles.analytic import ellipse, rectangle, validation_shapes
from micrometry.particles.morphometry import IMAGEJ_COLUMNS, ISO_COLUMNS, measure_labels
from micrometry.particles.psd import percentiles_with_ci, weighted_quantiles


def measure_one(mask: np.ndarray, **kw) -> pd.Series:
    table = measure_labels(mask.astype(np.int32), **kw)
    assert len(table) == 1
    return table.iloc[0]


# --------------------------------------------------------------------------- analytic shapes

SHAPES = validation_shapes()


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_analytic_shape_within_stated_tolerance(shape):
    """Tolerances of docs/morphometry.md: perimeter 2 % (curved) / 8 % (cornered), calipers 1 px."""
    m = measure_one(shape.mask)
    curved = shape.name.startswith(("disc", "ellipse"))
    perimeter_tolerance = 0.02 if curved else 0.08
    assert m["Perim."] == pytest.approx(shape.perimeter, rel=perimeter_tolerance)
    assert abs(m["Feret"] - shape.feret) <= 1.0
    assert abs(m["MinFeret"] - shape.min_feret) <= 1.0
    # pixel-count area: off by at most a thin band along the outline
    assert abs(m["Area"] - shape.area) <= 0.1 * shape.perimeter
    # Circ. = 4 pi Area / Perim.^2 (capped at 1, which the measured disc reaches), near the true shape's value;
    # on small shapes the pixel-count area and the traced perimeter both err, hence the wider band
    assert m["Circ."] == pytest.approx(min(1.0, 4 * math.pi * m["Area"] / m["Perim."] ** 2), rel=1e-9)
    true_circularity = min(1.0, 4 * math.pi * shape.area / shape.perimeter**2)
    assert m["Circ."] == pytest.approx(true_circularity, rel=0.1 if curved else 0.2)
    assert m["Solidity"] <= 1 and m["Convexity"] <= 1
    assert m["Solidity"] >= 0.95  # every validation shape is convex


def test_large_shapes_are_more_accurate():
    """Perimeter of a large disc and a large tilted rectangle: within 0.5 % and 2 %."""
    disc = ellipse(50, 50)
    assert measure_one(disc.mask)["Perim."] == pytest.approx(disc.perimeter, rel=0.005)
    rect = rectangle(120, 40, 20)
    assert measure_one(rect.mask)["Perim."] == pytest.approx(rect.perimeter, rel=0.02)


def test_pixel_edge_perimeter_would_fail():
    """The test above can fail: a 4-connected pixel-edge perimeter is 27 % long on a disc."""
    disc = ellipse(30, 30)
    padded = np.pad(disc.mask, 1).astype(int)
    edge_count = np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum()
    assert edge_count / disc.perimeter > 1.2
    assert measure_one(disc.mask)["Perim."] / disc.perimeter < 1.02


@pytest.mark.parametrize("angle", [0, 25, 60, 110, 155])
def test_ellipse_angles(angle):
    shape = ellipse(30, 10, angle)
    m = measure_one(shape.mask)

    def angular_error(a, b):
        return abs((a - b + 90) % 180 - 90)

    assert angular_error(m["Angle"], angle) < 1.0
    assert angular_error(m["FeretAngle"], angle) < 3.0
    assert m["AR"] == pytest.approx(3.0, rel=0.03)
    assert m["Major"] == pytest.approx(60, rel=0.02)
    assert m["Minor"] == pytest.approx(20, rel=0.03)
    assert m["Round"] == pytest.approx(1 / 3, rel=0.03)
    assert m["Elongation"] == pytest.approx(1 - 20 / 60, abs=0.03)


def test_iso_descriptors_of_a_rectangle():
    """Geodetic length/thickness recover the sides of a rectangle from its area and perimeter."""
    shape = rectangle(80, 20, 0)
    m = measure_one(shape.mask)
    assert m["GeodLength"] == pytest.approx(80, rel=0.05)
    assert m["GeodThickness"] == pytest.approx(20, rel=0.1)
    assert m["EqDiam"] == pytest.approx(math.sqrt(4 * 1600 / math.pi), rel=0.01)
    assert m["PerimEqDiam"] == pytest.approx(m["Perim."] / math.pi)


def test_concave_shape_has_low_solidity_and_convexity():
    """An L shape (two 40 x 10 bars): solidity 700 / 1150, convexity 142.4 / 160 on the exact shape."""
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:20] = True
    mask[40:50, 10:50] = True
    m = measure_one(mask)
    assert m["Solidity"] == pytest.approx(700 / (1600 - 900 / 2), rel=0.03)
    assert m["Convexity"] == pytest.approx((100 + 30 * math.sqrt(2)) / 160, rel=0.04)


def test_calipers_of_a_unit_square():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    feret, min_feret, angle = calipers(square)
    assert feret == pytest.approx(math.sqrt(2))
    assert min_feret == pytest.approx(1.0)
    assert angle in (pytest.approx(45.0), pytest.approx(135.0))


# --------------------------------------------------------------------------- agreement with regionprops


def random_label_image(seed: int, size: int = 256, n: int = 30) -> np.ndarray:
    """Non-overlapping random ellipses (aspect ratio >= 1.3 so orientation is defined)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    next_id = 1
    for _ in range(n):
        a = int(rng.integers(6, 18))
        b = max(2, int(a / rng.uniform(1.3, 3.0)))
        canvas = np.zeros_like(labels, dtype=np.uint8)
        centre = (int(rng.integers(20, size - 20)), int(rng.integers(20, size - 20)))
        cv2.ellipse(canvas, centre, (a, b), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if (labels[canvas > 0] > 0).any():
            continue
        labels[canvas > 0] = next_id * 3  # ids need not be consecutive
        next_id += 1
    return labels


def test_table_matches_regionprops():
    labels = random_label_image(0)
    table = measure_labels(labels)
    props = regionprops(labels)
    assert list(table["Label"]) == [p.label for p in props]
    ref = pd.DataFrame(
        {
            "area": [p.area for p in props],
            "row": [p.centroid[0] for p in props],
            "col": [p.centroid[1] for p in props],
            "major": [p.axis_major_length for p in props],
            "minor": [p.axis_minor_length for p in props],
            "orientation": [p.orientation for p in props],
            "solidity": [p.solidity for p in props],
        }
    )
    np.testing.assert_allclose(table["Area"], ref["area"])
    # ImageJ centroids put pixel centres at index + 0.5
    np.testing.assert_allclose(table["X"], ref["col"] + 0.5)
    np.testing.assert_allclose(table["Y"], ref["row"] + 0.5)
    # Major/Minor include each pixel's own second moment (1/12); without it they are regionprops'
    np.testing.assert_allclose(4 * np.sqrt(table["Major"] ** 2 / 16 - 1 / 12), ref["major"], rtol=1e-6)
    np.testing.assert_allclose(4 * np.sqrt(table["Minor"] ** 2 / 16 - 1 / 12), ref["minor"], rtol=1e-6)
    # regionprops' orientation is from the row axis; ImageJ's Angle from the x axis, 0..180
    expected_angle = np.mod(np.degrees(ref["orientation"]) + 90, 180)
    diff = np.abs((table["Angle"] - expected_angle + 90) % 180 - 90)
    assert diff.max() < 1e-6
    # Solidity: regionprops counts pixels in a pixel hull, which makes a small convex particle look
    # 3-9 % concave; the smoothed sub-pixel outline stays nearer the truth (1 for these ellipses).
    assert np.abs(table["Solidity"] - ref["solidity"]).max() < 0.1
    assert (table["Solidity"] >= ref["solidity"] - 0.005).all()
    assert (1 - table["Solidity"]).mean() < 0.5 * (1 - ref["solidity"]).mean()


def test_calibration_scales_lengths_and_areas():
    labels = random_label_image(1)
    px = measure_labels(labels)
    um = measure_labels(labels, pixel_size=0.5, unit="um")
    for column in ("Perim.", "Feret", "MinFeret", "Major", "Minor", "X", "Y", "EqDiam", "GeodLength"):
        np.testing.assert_allclose(um[column], 0.5 * px[column])
    np.testing.assert_allclose(um["Area"], 0.25 * px["Area"])
    for column in ("Circ.", "AR", "Round", "Solidity", "Convexity", "Elongation", "Angle", "FeretAngle"):
        np.testing.assert_allclose(um[column], px[column])
    assert set(um["Unit"]) == {"um"}


def test_columns_border_flag_and_empty_image():
    labels = np.zeros((50, 60), np.int32)
    labels[0:5, 10:20] = 1  # touches the top edge
    labels[20:30, 20:30] = 2
    labels[40:50, 50:60] = 3  # touches bottom and right
    table = measure_labels(labels)
    for column in [*IMAGEJ_COLUMNS, *ISO_COLUMNS, "TouchesBorder", "Label"]:
        assert column in table
    assert list(table["TouchesBorder"]) == [True, False, True]
    empty = measure_labels(np.zeros((10, 10), np.uint16))
    assert len(empty) == 0 and list(empty.columns) == list(table.columns)


def test_intensity_columns_with_image():
    labels = np.zeros((20, 20), np.int32)
    labels[2:6, 2:6] = 1
    labels[10:15, 10:15] = 2
    image = np.arange(400, dtype=np.uint16).reshape(20, 20)
    table = measure_labels(labels, image=image)
    assert table.loc[0, "Mean"] == pytest.approx(image[2:6, 2:6].mean())
    assert table.loc[1, "Max"] == image[10:15, 10:15].max()


# --------------------------------------------------------------------------- PSD


def test_weighted_quantiles_number_and_volume():
    sizes = np.arange(1, 100, dtype=float)
    assert weighted_quantiles(sizes, None, np.array([0.5]))[0] == pytest.approx(50)
    # volume weighting moves the median to the big particles: sum of d^3 below D50_v is half
    d50_v = weighted_quantiles(sizes, sizes**3, np.array([0.5]))[0]
    assert (sizes[sizes <= d50_v] ** 3).sum() == pytest.approx(0.5 * (sizes**3).sum(), rel=0.05)


def test_psd_confidence_interval_covers_truth_and_shrinks():
    rng = np.random.default_rng(3)
    true_median = math.exp(2.0)
    small = percentiles_with_ci(rng.lognormal(2.0, 0.4, 300), n_boot=300)
    large = percentiles_with_ci(rng.lognormal(2.0, 0.4, 5000), n_boot=300)
    for table in (small, large):
        assert table.loc["D50", "ci_low"] < true_median < table.loc["D50", "ci_high"]
        assert table.loc["D10", "value"] < table.loc["D50", "value"] < table.loc["D90", "value"]
    width = lambda t: t.loc["D50", "ci_high"] - t.loc["D50", "ci_low"]  # noqa: E731
    assert width(large) < 0.5 * width(small)


# --------------------------------------------------------------------------- the measure command


@pytest.fixture
def label_folder(tmp_path):
    folder = tmp_path / "labels"
    for i, suffix in enumerate((".png", ".tif")):  # 16-bit PNG and TIFF label images
        write_image(folder / f"img{i}{suffix}", random_label_image(10 + i, n=20).astype(np.uint16))
    return folder


def test_measure_cli_label_folder_csv_and_parquet(label_folder, tmp_path):
    out = tmp_path / "out" / "particles.csv"
    assert run(command_argv("particles", "measure", label_folder, pixel_size=0.5, unit="um", out=out)) == 0
    table = pd.read_csv(out)
    expected = sum(len(np.unique(random_label_image(10 + i, n=20))) - 1 for i in range(2))
    assert len(table) == expected
    assert set(table["Image"]) == {"img0", "img1"}
    images = pd.read_csv(tmp_path / "out" / "particles_images.csv")
    summary = pd.read_csv(tmp_path / "out" / "particles_summary.csv")
    assert list(images["Count"]) == list(table.groupby("Image").size())
    assert summary.loc[0, "Count"] == len(table)
    assert summary.loc[0, "D10_n_um"] < summary.loc[0, "D50_n_um"] < summary.loc[0, "D90_n_um"]
    assert summary.loc[0, "D50_n_low_um"] <= summary.loc[0, "D50_n_um"] <= summary.loc[0, "D50_n_high_um"]
    assert summary.loc[0, "D50_v_um"] >= summary.loc[0, "D50_n_um"]
    coverage = (table["Area_um2"].sum()) / (2 * 256 * 256 * 0.25)
    assert summary.loc[0, "Coverage"] == pytest.approx(coverage)
    pq = tmp_path / "p.parquet"
    assert run(["particles", "measure", str(label_folder), "--out", str(pq)]) == 0
    assert len(pd.read_parquet(pq)) == expected and (tmp_path / "p_summary.parquet").is_file()


def test_measure_exclude_edges(tmp_path):
    labels = np.zeros((40, 40), np.uint16)
    labels[0:5, 0:5] = 1
    labels[10:20, 10:20] = 2
    write_image(tmp_path / "in" / "a.png", labels)
    out = tmp_path / "t.csv"
    assert run(["particles", "measure", str(tmp_path / "in"), "--exclude-edges", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table["Label"]) == [2]
    summary = pd.read_csv(tmp_path / "t_summary.csv")
    assert summary.loc[0, "TouchingBorder"] == 1
    assert summary.loc[0, "Coverage"] == pytest.approx(125 / 1600)  # coverage keeps the border particle


def test_measure_coco_instances_and_results(tmp_path):
    from micrometry.io.coco import mask_to_rle

    labels = random_label_image(5, size=128, n=8)
    ids = [i for i in np.unique(labels) if i]
    coco = {
        "images": [{"id": 7, "file_name": "sample.png", "height": 128, "width": 128}],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 7,
                "category_id": 1,
                "segmentation": mask_to_rle(labels == i),
                "iscrowd": 0,
            }
            for k, i in enumerate(ids)
        ],
        "categories": [{"id": 1, "name": "particle"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    assert run(["particles", "measure", str(tmp_path / "gt.json"), "--out", str(tmp_path / "gt.csv")]) == 0
    from_coco = pd.read_csv(tmp_path / "gt.csv")
    direct = measure_labels(labels)
    np.testing.assert_allclose(np.sort(from_coco["Area_px2"]), np.sort(direct["Area"]))
    np.testing.assert_allclose(np.sort(from_coco["Perim_px"]), np.sort(direct["Perim."]), rtol=1e-5)
    assert set(from_coco["Image"]) == {"sample"}

    results = [
        {"image_id": 7, "category_id": 1, "segmentation": a["segmentation"], "score": 0.9 - 0.05 * k}
        for k, a in enumerate(coco["annotations"])
    ]
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "results.json").write_text(json.dumps(results))
    (pred / "images.json").write_text(json.dumps({**coco, "annotations": []}))
    out = tmp_path / "res.csv"
    assert (
        run(["particles", "measure", str(pred / "results.json"), "--min-score", "0.6", "--out", str(out)])
        == 0
    )
    kept = sum(r["score"] >= 0.6 for r in results)
    assert len(pd.read_csv(out)) == kept


@pytest.mark.parametrize(
    "case",
    ["missing", "empty_folder", "colour", "bad_suffix", "results_without_images", "bad_json", "exists"],
)
def test_measure_bad_inputs_exit_2_one_line(case, tmp_path, label_folder, capsys):
    out = tmp_path / "out.csv"
    source = label_folder
    if case == "missing":
        source = tmp_path / "nope"
    elif case == "empty_folder":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "colour":
        rgb = np.zeros((8, 8, 3), np.uint8)
        rgb[..., 0] = 200
        source = tmp_path / "colour"
        source.mkdir()
        cv2.imwrite(str(source / "c.png"), rgb)
    elif case == "bad_suffix":
        out = tmp_path / "out.xlsx"
    elif case == "results_without_images":
        source = tmp_path / "results.json"
        source.write_text("[]")
    elif case == "bad_json":
        source = tmp_path / "broken.json"
        source.write_text("{not json")
    elif case == "exists":
        out.write_text("keep me")
    capsys.readouterr()
    assert run(["particles", "measure", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    if case == "exists":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_vectorised_outlines_equal_per_particle_reference():
    """All-at-once tracing gives exactly what find_contours gives on each mask alone:
    touching particles, fragments of one id, a ring with a hole and a particle inside the hole, 1-pixel ones."""
    from morphometry_reference import outline_measures

    rng = np.random.default_rng(7)
    labels = np.zeros((160, 160), np.int32)
    for i in range(1, 60):  # overlapping ellipses: later ones cut earlier ones into touching fragments
        cv2.ellipse(
            labels,
            (int(rng.integers(0, 160)), int(rng.integers(0, 160))),
            (int(rng.integers(2, 14)), int(rng.integers(2, 14))),
            float(rng.uniform(0, 180)),
            0,
            360,
            i,
            -1,
        )
    yy, xx = np.mgrid[0:160, 0:160]
    r = np.hypot(xx - 80, yy - 80)
    labels[r < 25] = 0
    labels[(r >= 12) & (r < 25)] = 100  # ring
    labels[r < 4] = 101  # inside the ring's hole
    labels[3, 150] = 102  # single pixel
    labels[0, 0] = 103  # single pixel in a corner
    table = measure_labels(labels)
    for _, row in table.iterrows():
        perimeter, feret, min_feret, angle, solidity, _ = outline_measures(labels == row["Label"])
        assert row["Perim."] == pytest.approx(perimeter, abs=1e-9)
        assert row["Feret"] == pytest.approx(feret, abs=1e-9)
        assert row["MinFeret"] == pytest.approx(min_feret, abs=1e-9)
        assert row["FeretAngle"] == pytest.approx(angle, abs=1e-6)
        assert row["Solidity"] == pytest.approx(solidity, abs=1e-9)
    ring = table.set_index("Label").loc[100]
    assert ring["Perim."] == pytest.approx(2 * np.pi * 25, rel=0.03)  # the hole's outline is not counted


def test_woodruff_intervals_agree_with_bootstrap():
    """Above BOOTSTRAP_MAX particles the PSD CIs switch to Woodruff's O(n) intervals: same answer."""
    from micrometry.particles import psd

    sizes = np.random.default_rng(4).lognormal(2.0, 0.4, 1500)
    boot = psd.percentiles_with_ci(sizes, "number", n_boot=1000)
    low, high = psd.woodruff_intervals(sizes, None, np.array([0.1, 0.5, 0.9]), 0.95)
    width = (boot["ci_high"] - boot["ci_low"]).to_numpy()
    assert np.all(np.abs(low - boot["ci_low"].to_numpy()) < 0.25 * width)
    assert np.all(np.abs(high - boot["ci_high"].to_numpy()) < 0.25 * width)
    large = psd.percentiles_with_ci(np.random.default_rng(5).lognormal(2.0, 0.4, 50000), "volume")
    assert (large["ci_low"] < large["value"]).all() and (large["value"] < large["ci_high"]).all()


def test_measure_cli_intensity_from_gray_images(tmp_path, capsys):
    labels = np.zeros((30, 40), np.uint16)
    labels[5:10, 5:12] = 1
    labels[15:25, 20:30] = 2
    gray = np.arange(1200, dtype=np.uint8).reshape(30, 40) % 200
    write_image(tmp_path / "labels" / "s.png", labels)
    write_image(tmp_path / "gray" / "s.png", gray)
    out = tmp_path / "t.csv"
    assert (
        run(command_argv("particles", "measure", tmp_path / "labels", images=tmp_path / "gray", out=out)) == 0
    )
    table = pd.read_csv(out)
    assert table.loc[0, "Mean"] == pytest.approx(gray[5:10, 5:12].mean())
    assert table.loc[1, "Max"] == gray[15:25, 20:30].max()
    write_image(tmp_path / "gray" / "s.png", gray[:20])  # wrong size: one-line error, no output
    capsys.readouterr()
    assert (
        run(
            command_argv(
                "particles", "measure", tmp_path / "labels", images=tmp_path / "gray", out=tmp_path / "u.csv"
            )
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("error:") and not (tmp_path / "u.csv").exists()


def test_huge_sparse_ids_give_the_same_table():
    labels = random_label_image(2, size=128, n=10)
    sparse = np.where(labels > 0, labels.astype(np.int64) * 1_000_000_007, 0)
    dense_table = measure_labels(labels)
    sparse_table = measure_labels(sparse)
    assert list(sparse_table["Label"]) == [i * 1_000_000_007 for i in dense_table["Label"]]
    pd.testing.assert_frame_equal(sparse_table.drop(columns="Label"), dense_table.drop(columns="Label"))
