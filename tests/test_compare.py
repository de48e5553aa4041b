"""Batch comparison: a known shift is found, same-population batches are not flagged, trivial shifts stay trivial."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import command_argv, synth_particles_argv
from micrometry.cli import run
from micrometry.particles.compare import CompareSettings, compare_tables, decide
from micrometry.particles.measure import read_table
from micrometry.particles.morphometry import measure_labels

FAST = CompareSettings(n_boot=300)


def ellipse_batch(
    seed: int, aspect_mean: float, n_images: int = 3, per_image: int = 120, size: int = 384
) -> pd.DataFrame:
    """Measured particles of random non-overlapping ellipses whose aspect ratio ~ N(aspect_mean, 0.15)."""
    rng = np.random.default_rng(seed)
    tables = []
    for _ in range(n_images):
        labels = np.zeros((size, size), np.int32)
        next_id = 1
        for _ in range(per_image):
            radius = rng.uniform(5, 10)
            aspect = max(1.0, rng.normal(aspect_mean, 0.15))
            axes = (int(round(radius * np.sqrt(aspect))), int(round(radius / np.sqrt(aspect))))
            canvas = np.zeros((size, size), np.uint8)
            centre = (int(rng.integers(15, size - 15)), int(rng.integers(15, size - 15)))
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            if (labels[canvas > 0] > 0).any():
                continue
            labels[canvas > 0] = next_id
            next_id += 1
        tables.append(measure_labels(labels, pixel_size=0.5, unit="um"))
    return pd.concat(tables, ignore_index=True)


def population(seed: int, n: int, ar_shift: float = 0.0, size_scale: float = 1.0) -> pd.DataFrame:
    """A table of descriptor values drawn from fixed distributions (fast, for many replicates)."""
    rng = np.random.default_rng(seed)
    eq = rng.lognormal(np.log(10 * size_scale), 0.3, n)
    ar = 1 + rng.gamma(2.0, 0.1, n) + ar_shift
    circ = np.clip(rng.beta(20, 2, n), 0, 1)
    return pd.DataFrame(
        {
            "EqDiam": eq,
            "Area": np.pi * eq**2 / 4,
            "AR": ar,
            "Circ.": circ,
            "Feret": eq * np.sqrt(ar),
            "Solidity": np.clip(rng.beta(50, 1.5, n), 0, 1),
            "Unit": "um",
        }
    )


def test_known_aspect_ratio_shift_is_detected():
    a = ellipse_batch(1, 1.2)
    b = ellipse_batch(2, 1.5)
    result = compare_tables(a, b, settings=FAST).set_index("descriptor")
    ar = result.loc["AR"]
    assert ar["changed"]
    assert ar["shift"] > 0.15 and ar["shift_low"] > 0
    assert ar["verdict"].startswith("aspect ratio rose from")
    assert result.loc["Elongation", "changed"] and result.loc["Round", "changed"]
    # size was not changed: the area-equivalent diameter must not be flagged
    assert not result.loc["EqDiam", "changed"]


def test_same_population_measured_batches_not_flagged():
    a = ellipse_batch(3, 1.3)
    b = ellipse_batch(4, 1.3)
    result = compare_tables(a, b, settings=FAST)
    assert not result["changed"].any(), result.loc[result["changed"], "verdict"].tolist()


def test_same_population_replicates_false_positive_rate():
    """20 seeded replicate pairs x 6 descriptors, n = 2000 each: no descriptor is flagged."""
    flagged = 0
    for replicate in range(20):
        a = population(2 * replicate, 2000)
        b = population(2 * replicate + 1, 2000)
        flagged += int(
            compare_tables(a, b, settings=CompareSettings(n_boot=200, seed=replicate))["changed"].sum()
        )
    assert flagged == 0


def test_trivial_shift_with_large_n_is_not_called_a_change():
    """A 2.5 % size shift on 20 000 particles: KS is significant, the verdict says it is below the threshold."""
    a = population(100, 20000)
    b = population(101, 20000, size_scale=1.025)
    row = compare_tables(a, b, descriptors=["EqDiam"], settings=CompareSettings(n_boot=200)).iloc[0]
    assert row["ks_pvalue"] < 0.01 and row["significant"]
    assert not row["changed"]
    assert "no practically relevant change" in row["verdict"]


def test_decision_rule_needs_all_three_conditions():
    base = {"ks_pvalue": 0.001, "shift": 0.3, "shift_low": 0.2, "shift_high": 0.4, "threshold": 0.1}
    settings = CompareSettings()
    assert decide(base, settings)["changed"]
    assert not decide({**base, "ks_pvalue": 0.2}, settings)["changed"]
    assert not decide({**base, "shift_low": -0.1}, settings)["changed"]
    assert not decide({**base, "threshold": 0.5}, settings)["changed"]


def test_compare_cli_writes_csv_json_html(tmp_path, capsys):
    a, b = population(1, 800), population(2, 800, ar_shift=0.3)
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_parquet(tmp_path / "b.parquet", index=False)
    out = tmp_path / "cmp"
    assert (
        run(
            [
                "particles",
                "compare",
                str(tmp_path / "a.csv"),
                str(tmp_path / "b.parquet"),
                "--out",
                str(out),
                "--n-boot",
                "200",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "aspect ratio rose from" in printed
    table = pd.read_csv(out / "compare.csv")
    summary = json.loads((out / "compare.json").read_text())
    assert "AR" in summary["changed"] and "EqDiam" not in summary["changed"]
    assert set(table["descriptor"]) >= {"AR", "EqDiam", "Circ."}
    for column in ("median_a_low", "shift_low", "wasserstein", "ks_statistic", "ks_pvalue", "cliffs_delta"):
        assert table[column].notna().all()
    assert (out / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize("case", ["missing", "units", "one_row", "no_columns", "exists"])
def test_compare_bad_inputs_exit_2(case, tmp_path, capsys):
    a = population(1, 50)
    b = population(2, 50)
    if case == "units":
        b["Unit"] = "nm"
    elif case == "one_row":
        b = b.head(1)
    elif case == "no_columns":
        b = pd.DataFrame({"foo": [1, 2, 3]})
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "cmp"
    if case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    b_path = tmp_path / ("missing.csv" if case == "missing" else "b.csv")
    capsys.readouterr()
    assert run(["particles", "compare", str(tmp_path / "a.csv"), str(b_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    if case == "exists":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow  # a long end-to-end check; `make test` runs it
def test_synthetic_batches_end_to_end(tmp_path):
    """The particle-data engineer's synthetic batches: B has a known higher aspect ratio and rougher
    outlines than A; batch A of two different seeds is one population."""
    tables = {}
    for seed in (3, 4):
        out, truth = tmp_path / f"synth{seed}", tmp_path / f"truth{seed}"
        assert (
            run(synth_particles_argv(out, truth, n_train=0, n_test=0, height=512, width=512, seed=seed)) == 0
        )
        for batch in ("A", "B"):
            table = tmp_path / f"{batch}{seed}.csv"
            assert (
                run(
                    command_argv(
                        "particles", "measure", truth / "batches" / f"{batch}_annotations.json", out=table
                    )
                )
                == 0
            )
            tables[batch, seed] = read_table(table)  # the files name units; read_table gives the bare names
    shifted = compare_tables(tables["A", 3], tables["B", 3], settings=FAST).set_index("descriptor")
    assert shifted.loc["AR", "changed"] and shifted.loc["AR", "shift"] > 0
    assert shifted.loc["Convexity", "changed"] and shifted.loc["Convexity", "shift"] < 0
    assert not shifted.loc["EqDiam", "changed"]
    same = compare_tables(tables["A", 3], tables["A", 4], settings=FAST)
    assert not same["changed"].any(), same.loc[same["changed"], "verdict"].tolist()
    # raw image folders are segmented first with --model (any registered segmenter)
    out = tmp_path / "cmp_model"
    assert (
        run(
            [
                "particles",
                "compare",
                str(tmp_path / "synth3" / "batches" / "A"),
                str(tmp_path / "synth3" / "batches" / "B"),
                "--model",
                "watershed",
                "--n-boot",
                "100",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads((out / "compare.json").read_text())["descriptors"]
    assert rows[0]["n_a"] > 5 and rows[0]["n_b"] > 5


@pytest.mark.parametrize("n", [9, 40, 501])
def test_bootstrap_medians_match_explicit_resampling(n):
    from micrometry.particles.compare import bootstrap_medians

    x = np.random.default_rng(n).lognormal(0, 0.5, n)
    fast = bootstrap_medians(x, 20000, np.random.default_rng(1))
    slow = np.median(x[np.random.default_rng(2).integers(0, n, (20000, n))], axis=1)
    spread = np.quantile(slow, 0.975) - np.quantile(slow, 0.025)
    for q in (0.025, 0.5, 0.975):
        assert abs(np.quantile(fast, q) - np.quantile(slow, q)) < 0.05 * spread
