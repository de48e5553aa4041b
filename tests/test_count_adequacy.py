"""ISO 13322-1 / 9276-6 reporting: count adequacy, shape distributions, touching/agglomerate flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk, ellipse

from micrometry.cli import run
from micrometry.io.image import write_image
from micrometry.particles import psd
from micrometry.particles.flags import touching_ids
from micrometry.particles.measure import measure_source, read_table
from micrometry.particles.morphometry import measure_labels

GSD = 1.6
CASES = [(0.5, "number"), (0.9, "number"), (0.5, "volume"), (0.9, "volume")]


def _simulated_rel_spread(n, level, weighting, reps=300, seed=0):
    """Standard deviation of log(sample quantile) over log-normal samples of size n: the truth."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(1.0, np.log(GSD), size=(reps, n))
    w = x**3 if weighting == "volume" else None
    return float(np.std(np.log(psd.weighted_quantiles(x, w, np.array([level]))[:, 0])))


@pytest.mark.parametrize("level,weighting", CASES)
def test_closed_form_matches_simulation_of_lognormal_samples(level, weighting):
    """The log-normal reference variance (delta method, weights x^k) against 300 simulated samples."""
    n = 2000
    simulated = _simulated_rel_spread(n, level, weighting)
    assert psd.lognormal_relative_se(GSD, level, weighting, n) == pytest.approx(simulated, rel=0.2)


@pytest.mark.parametrize("level,weighting", CASES)
def test_reported_precision_matches_the_spread_of_repeated_samples(level, weighting):
    """From ONE sample of 500, the reported +-precision must match what 300 repeats actually scatter.

    Number-weighted within 20 %; volume-weighted may err on the safe side (it is bounded below by
    the log-normal reference) but never claims more than 0.8x the true precision."""
    n = 500
    z = 1.959964
    truth = z * _simulated_rel_spread(n, level, weighting, seed=1)
    sample = np.random.default_rng(7).lognormal(1.0, np.log(GSD), n)
    reported = psd.count_adequacy(sample).loc[f"D{round(level * 100)}_{weighting[0]}", "precision"]
    if weighting == "number":
        assert reported == pytest.approx(truth, rel=0.2)
    else:
        assert 0.8 * truth <= reported <= 1.6 * truth


def test_the_needed_count_reaches_the_target_when_simulated():
    """Measure 300 particles, ask for +-5 % on D50 (number); samples of the count it names hit +-5 %."""
    sample = np.random.default_rng(3).lognormal(1.0, np.log(GSD), 300)
    table = psd.count_adequacy(sample, target=0.05)
    needed = int(table.loc["D50_n", "count_needed"])
    assert 300 < needed < 1500  # closed form for GSD 1.6: 534
    achieved = 1.959964 * _simulated_rel_spread(needed, 0.5, "number", reps=300, seed=4)
    assert achieved == pytest.approx(0.05, rel=0.2)
    assert not table.loc["D50_n", "adequate"]
    # the closed form's counts for GSD 1.6 (docs/morphometry.md): the volume D90 needs tens of thousands
    assert psd.count_needed(psd.lognormal_relative_se(GSD, 0.9, "volume"), 1) > 30_000


def test_precision_falls_as_one_over_root_n_and_warning_says_so():
    rng = np.random.default_rng(0)
    small = psd.adequacy_row(rng.lognormal(1.0, 0.47, 400))
    large = psd.adequacy_row(rng.lognormal(1.0, 0.47, 6400))
    assert small["Precision_D50_n"] / large["Precision_D50_n"] == pytest.approx(4.0, rel=0.25)
    line = psd.adequacy_warning(small, 400)
    assert line.startswith("400 particles give D90 (volume)") and "needs about" in line
    assert "\n" not in line
    tight = psd.adequacy_row(rng.lognormal(1.0, 0.05, 5000), target=0.05)
    assert tight["CountAdequate"] and psd.adequacy_warning(tight, 5000) is None


# --------------------------------------------------------------------------- flags


def _scene():
    lab = np.zeros((160, 320), np.int32)
    for i, x in enumerate((30, 80, 130, 180, 230)):  # five single discs, apart
        lab[disk((30, x), 12)] = i + 1
    lab[disk((100, 40), 12)] = 6  # two touching discs fused into one object: an agglomerate
    lab[disk((100, 64), 12)] = 6
    lab[ellipse(100, 150, 13, 34)] = 7  # a large but convex particle: not an agglomerate
    lab[disk((100, 240), 12)] = 8  # two particles one pixel apart: touching
    lab[disk((100, 264), 12)] = 9
    lab[disk((100, 263), 12)] = 9
    return lab


def test_touching_and_agglomerate_flags():
    lab = _scene()
    table = measure_labels(lab).set_index("Label")
    assert list(table.index[table["Agglomerate"]]) == [6]
    assert list(table.index[table["Touching"]]) == [8, 9]
    assert table.loc[6, "Solidity"] < 0.9 and table.loc[7, "Solidity"] > 0.95
    # a gap of two pixels is not contact
    apart = np.zeros((40, 80), np.int32)
    apart[5:30, 5:30], apart[5:30, 33:60] = 1, 2
    assert touching_ids(apart).size == 0
    apart[5:30, 31:33] = 3
    assert set(touching_ids(apart)) == {1, 2, 3}


def test_measure_summary_holds_adequacy_flags_and_shape_distributions(tmp_path, capsys):
    write_image(tmp_path / "labels" / "a.png", _scene().astype(np.uint16))
    m = measure_source(tmp_path / "labels", pixel_size=0.5, unit="um", n_boot=100)
    s = m.summary.iloc[0]
    assert (s["Agglomerates"], s["Touching"]) == (1, 2)
    assert m.images.loc[0, "Agglomerates"] == 1
    assert "sphere" in s["VolumeWeighting"]
    assert not s["CountAdequate"] and s["CountNeeded_D90_v"] > 9
    assert s["Circ_P10"] <= s["Circ_P50"] <= s["Circ_P90"] <= 1
    assert s["Solidity_P10"] < s["Solidity_P50"] <= s["Solidity_P90"]
    out = tmp_path / "t.csv"
    assert run(["particles", "measure", str(tmp_path / "labels"), "--out", str(out)]) == 0
    text = capsys.readouterr()
    assert "precision at 95 % (target +-5 %)" in text.out and "1 probable agglomerates" in text.out
    assert "warning: 9 particles are too few to judge the precision" in text.err
    back = read_table(out.with_name("t_summary.csv"))
    assert {"CountNeeded_D50_n", "Precision_D90_v", "Agglomerates", "AR_P90"} <= set(back.columns)
    assert back.loc[0, "D50_n"] == pytest.approx(s["D50_n"] / 0.5, rel=1e-5)  # pixels here
    particles = pd.read_csv(out)
    assert particles["Agglomerate"].dtype == bool and particles["Agglomerate"].sum() == 1


def test_target_precision_option_scales_the_count_needed(tmp_path, capsys):
    """--target-precision: twice looser needs four times fewer particles; never fewer than 100."""
    rng = np.random.default_rng(0)
    lab = np.zeros((600, 600), np.int32)
    k = 0
    for y in range(20, 590, 40):
        for x in range(20, 590, 40):
            k += 1
            lab[disk((y, x), float(np.clip(rng.lognormal(2.0, 0.3), 3, 17)), shape=lab.shape)] = k
    write_image(tmp_path / "labels" / "a.png", lab.astype(np.uint16))
    tight = measure_source(tmp_path / "labels", n_boot=100, target=0.05).summary.iloc[0]
    loose = measure_source(tmp_path / "labels", n_boot=100, target=0.1).summary.iloc[0]
    assert tight["Count"] == k > 100
    assert tight["CountNeeded_D90_v"] > 2000
    assert loose["CountNeeded_D90_v"] == pytest.approx(tight["CountNeeded_D90_v"] / 4, rel=0.01)
    assert loose["CountNeeded_D50_n"] == 100 and loose["PrecisionTarget"] == 0.1
    assert not tight["CountAdequate"]
    out = tmp_path / "t.csv"
    assert (
        run(
            ["particles", "measure", str(tmp_path / "labels"), "--out", str(out), "--target-precision", "0.5"]
        )
        == 0
    )
    assert "target +-50 %" in capsys.readouterr().out
    assert (
        run(["particles", "measure", str(tmp_path / "labels"), "--out", str(out), "--target-precision", "0"])
        == 2
    )
