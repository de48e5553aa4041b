"""False-positive rate and power of ``compare_tables``'s decision rule.

Same-population pairs (seeded replicates) should never be flagged; a known
aspect-ratio shift should be. Prints, per sample size: pairs, descriptor tests,
KS-only false positives (p < 0.01), rule false positives, and the detection rate
of a +0.1 and a +0.3 aspect-ratio shift. Run:
``.venv/bin/python bench/compare_rates.py [replicates]``.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from micrometry.particles.compare import CompareSettings, compare_tables


def population(seed: int, n: int, ar_shift: float = 0.0) -> pd.DataFrame:
    """Descriptor values from fixed distributions (the same as tests/test_compare.py)."""
    rng = np.random.default_rng(seed)
    eq = rng.lognormal(np.log(10), 0.3, n)
    ar = 1 + rng.gamma(2.0, 0.1, n) + ar_shift
    return pd.DataFrame(
        {
            "EqDiam": eq,
            "Area": np.pi * eq**2 / 4,
            "AR": ar,
            "Circ.": np.clip(rng.beta(20, 2, n), 0, 1),
            "Feret": eq * np.sqrt(ar),
            "Solidity": np.clip(rng.beta(50, 1.5, n), 0, 1),
            "Unit": "um",
        }
    )


def main(replicates: int = 100) -> None:
    rows = []
    for n in (200, 2000, 10000):
        tests = ks_fp = rule_fp = 0
        detected = {0.1: 0, 0.3: 0}
        for r in range(replicates):
            settings = CompareSettings(n_boot=200, seed=r)
            same = compare_tables(population(10 * r, n), population(10 * r + 1, n), settings=settings)
            tests += len(same)
            ks_fp += int((same["ks_pvalue"] < settings.alpha).sum())
            rule_fp += int(same["changed"].sum())
            for shift in detected:
                shifted = compare_tables(
                    population(10 * r + 2, n),
                    population(10 * r + 3, n, ar_shift=shift),
                    descriptors=["AR"],
                    settings=settings,
                )
                detected[shift] += int(shifted["changed"].iloc[0])
        rows.append(
            {
                "n per batch": n,
                "pairs": replicates,
                "descriptor tests": tests,
                "KS-only false positives": f"{ks_fp} ({100 * ks_fp / tests:.2f} %)",
                "rule false positives": f"{rule_fp} ({100 * rule_fp / tests:.2f} %)",
                "AR +0.1 detected": f"{100 * detected[0.1] / replicates:.0f} %",
                "AR +0.3 detected": f"{100 * detected[0.3] / replicates:.0f} %",
            }
        )
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
