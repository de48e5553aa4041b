"""Depth report figures: SEM images beside predicted (and true) depth maps, error maps,
RMSE per case, and a 3-D surface of a hole.

Inputs are what the depth job writes: a folder of PNG depth maps named like the
SEM images they were predicted from (72 x 48 uint8 in the Samsung layout, any
size works), the SEM folder, and optionally a folder of true depth maps.
Simulated SEM images are named ``<base>_itr0.png`` / ``<base>_itr1.png`` while
their depth map is ``<base>.png``: the ``_itrN`` suffix is dropped when looking
for the truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from micrometry.errors import DatasetError
from micrometry.io.image import list_images, read_image
from micrometry.report.html import Report

_ITR = re.compile(r"_itr\d+$")
_CASE = re.compile(r"^(Case_\d+|Depth_\d+)$")


@dataclass
class DepthSample:
    """One prediction with its SEM image and (optional) truth, as float arrays."""

    name: str
    case: str
    pred: np.ndarray
    sem: np.ndarray | None = None
    truth: np.ndarray | None = None


# --------------------------------------------------------------------------- loading


def case_of(relative: Path) -> str:
    """The case a file belongs to: a ``Case_N``/``Depth_N`` folder on its path, else its folder, else 'all'."""
    for part in relative.parts[:-1]:
        if _CASE.match(part):
            return part
    return relative.parts[-2] if len(relative.parts) > 1 else "all"


def truth_name(name: str) -> str:
    """Depth-map file stem for an SEM stem: ``X_itr0`` -> ``X``."""
    return _ITR.sub("", name)


def _index(folder: Path | None) -> tuple[dict[Path, Path], dict[str, Path]]:
    """Files of ``folder`` by relative path and by stem."""
    if folder is None:
        return {}, {}
    files = list_images(folder, recursive=True)
    return {p.relative_to(folder): p for p in files}, {p.stem: p for p in files}


def read_cases(path: str | Path) -> dict[str, str]:
    """File name -> case from a CSV with ``file`` and ``case`` columns (e.g. the SEM simulator's
    ``TRUTH/test_truth.csv``); numeric cases become ``Case_N``."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read cases CSV ({exc})", path) from None
    if not {"file", "case"} <= set(table.columns):
        raise DatasetError("cases CSV needs 'file' and 'case' columns", path)
    return {Path(str(f)).stem: (f"Case_{c}" if str(c).isdigit() else str(c))
            for f, c in zip(table["file"], table["case"])}


def load_depth_samples(pred_dir: str | Path, sem_dir: str | Path | None = None,
                       truth_dir: str | Path | None = None,
                       cases: dict[str, str] | None = None) -> list[DepthSample]:
    """Pair every predicted depth map with its SEM image and truth (matched by path, then by name).

    ``cases`` (file stem -> case) overrides the case read from folder names.
    """
    pred_dir = Path(pred_dir)
    preds = list_images(pred_dir, recursive=True)
    if not preds:
        raise DatasetError("no depth maps (.png) found", pred_dir)
    for folder in (sem_dir, truth_dir):
        if folder is not None and not Path(folder).is_dir():
            raise DatasetError("no such folder", folder)
    sem_by_path, sem_by_stem = _index(Path(sem_dir) if sem_dir else None)
    truth_by_path, truth_by_stem = _index(Path(truth_dir) if truth_dir else None)
    samples = []
    for path in preds:
        rel = path.relative_to(pred_dir)
        pred = read_image(path).astype(np.float64)
        sem_path = sem_by_path.get(rel) or sem_by_stem.get(path.stem)
        base = truth_name(path.stem)
        truth_path = (truth_by_path.get(rel) or truth_by_path.get(rel.with_name(base + rel.suffix))
                      or truth_by_stem.get(path.stem) or truth_by_stem.get(base))
        sem = read_image(sem_path).astype(np.float64) if sem_path else None
        truth = read_image(truth_path).astype(np.float64) if truth_path else None
        if truth is not None and truth.shape != pred.shape:
            raise DatasetError(f"truth {truth_path} is {truth.shape[::-1]} but the prediction is "
                               f"{pred.shape[::-1]} (width x height)", path)
        case = case_of(rel)
        if case == "all" and truth_path is not None:  # flat predictions: the truth's folders may tell the case
            case = case_of(truth_path.relative_to(truth_dir))
        if cases is not None:
            case = cases.get(path.stem, cases.get(base, case))
        samples.append(DepthSample(path.stem, case, pred, sem, truth))
    return samples


# --------------------------------------------------------------------------- numbers


def rmse_table(samples: list[DepthSample]) -> pd.DataFrame:
    """RMSE, MAE and bias (pred - truth) per case over all pixels, plus an 'all' row."""
    rows = []
    scored = [s for s in samples if s.truth is not None]
    groups = sorted({s.case for s in scored} - {"all"})
    for case in [*groups, "all"]:
        members = scored if case == "all" else [s for s in scored if s.case == case]
        if not members:
            continue
        err = np.concatenate([(s.pred - s.truth).ravel() for s in members])
        rows.append({"case": case, "images": len(members), "RMSE": float(np.sqrt(np.mean(err**2))),
                     "MAE": float(np.mean(np.abs(err))), "bias": float(np.mean(err))})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


def samples_figure(samples: list[DepthSample]) -> Figure:
    """One row per sample: SEM image, predicted depth, true depth, error map (what exists)."""
    has_sem = any(s.sem is not None for s in samples)
    has_truth = any(s.truth is not None for s in samples)
    columns = ["SEM"] * has_sem + ["predicted depth"] + ["true depth", "error (pred - truth)"] * has_truth
    h, w = samples[0].pred.shape
    fig = Figure(figsize=(2.1 * len(columns) * max(w / h, 0.5) + 0.8, 2.3 * len(samples)))
    depth_values = np.concatenate([np.r_[s.pred.ravel(), s.truth.ravel() if s.truth is not None else []]
                                   for s in samples])
    vmin, vmax = np.percentile(depth_values, [0.5, 99.5])
    errs = [np.abs(s.pred - s.truth).max() for s in samples if s.truth is not None]
    elim = max(max(errs, default=1.0), 1.0)
    for r, s in enumerate(samples):
        panels = ([(s.sem, "gray", None, None)] if has_sem else []) + [(s.pred, "viridis", vmin, vmax)]
        if has_truth:
            err = None if s.truth is None else s.pred - s.truth
            panels += [(s.truth, "viridis", vmin, vmax), (err, "RdBu_r", -elim, elim)]
        for c, (array, cmap, lo, hi) in enumerate(panels):
            ax = fig.add_subplot(len(samples), len(columns), r * len(columns) + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{s.case}\n{s.name}", fontsize=7)
            if array is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
                continue
            im = ax.imshow(array, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if cmap != "gray":
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.tight_layout()
    return fig


def rmse_figure(table: pd.DataFrame) -> Figure:
    """Bar chart of RMSE per case."""
    fig = Figure(figsize=(max(4.0, 0.9 * len(table) + 1), 3))
    ax = fig.add_subplot()
    colours = ["tab:blue" if case != "all" else "tab:gray" for case in table["case"]]
    ax.bar(table["case"], table["RMSE"], color=colours)
    for x, v in enumerate(table["RMSE"]):
        ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("RMSE (depth units)")
    ax.set_title("Pixel RMSE per case")
    fig.tight_layout()
    return fig


def surface_figure(sample: DepthSample) -> Figure:
    """3-D surfaces of one hole: predicted depth (and the truth beside it when known)."""
    panels = [("predicted", sample.pred)] + ([("true", sample.truth)] if sample.truth is not None else [])
    fig = Figure(figsize=(5 * len(panels), 4))
    h, w = sample.pred.shape
    yy, xx = np.mgrid[0:h, 0:w]
    lo = min(p.min() for _, p in panels)
    hi = max(p.max() for _, p in panels)
    for i, (title, depth) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        ax.plot_surface(xx, yy, depth, cmap="viridis", vmin=lo, vmax=hi, linewidth=0, antialiased=True,
                        rstride=1, cstride=1)
        ax.set_zlim(lo, hi)
        ax.set_title(f"{title} depth: {sample.name}", fontsize=9)
        ax.set_xlabel("x (px)", fontsize=8)
        ax.set_ylabel("y (px)", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.view_init(elev=35, azim=-60)
    fig.tight_layout()
    return fig


def pick_samples(samples: list[DepthSample], n: int = 6) -> list[DepthSample]:
    """Up to ``n`` samples spread over the cases (the first of each case, then evenly)."""
    by_case: dict[str, list[DepthSample]] = {}
    for s in samples:
        by_case.setdefault(s.case, []).append(s)
    picked: list[DepthSample] = []
    while len(picked) < min(n, len(samples)):
        for members in by_case.values():
            taken = sum(1 for p in picked if p.case == members[0].case)
            if taken < len(members) and len(picked) < n:
                picked.append(members[taken])
    return picked


def deepest_hole(samples: list[DepthSample]) -> DepthSample:
    """The sample whose predicted map has the largest top-to-bottom range (the clearest hole)."""
    return max(samples, key=lambda s: float(np.ptp(s.pred)))


def depth_report(pred_dir: str | Path, sem_dir: str | Path | None = None, truth_dir: str | Path | None = None,
                 cases: str | Path | None = None, n_samples: int = 6, title: str = "Depth from SEM") -> Report:
    """The whole depth report for a prediction folder (``cases``: optional CSV, see :func:`read_cases`)."""
    samples = load_depth_samples(pred_dir, sem_dir, truth_dir, read_cases(cases) if cases else None)
    report = Report(title)
    report.section("Summary")
    n_truth = sum(s.truth is not None for s in samples)
    n_sem = sum(s.sem is not None for s in samples)
    h, w = samples[0].pred.shape
    report.text(f"{len(samples)} predicted depth maps ({w} x {h} px) in {pred_dir}; "
                f"{n_sem} matched to an SEM image, {n_truth} to a true depth map.")
    if n_truth:
        table = rmse_table(samples)
        report.section("RMSE per case")
        report.table(table, float_format="{:.3f}")
        report.figure(rmse_figure(table), "Pixel RMSE per case (grey: all cases pooled).")
    report.section("Samples")
    report.figure(samples_figure(pick_samples(samples, n_samples)),
                  "SEM image, predicted depth, true depth and error, one sample per row.")
    report.section("A hole in 3-D")
    hole = deepest_hole(samples)
    report.figure(surface_figure(hole), f"Surface of {hole.name} ({hole.case}).")
    return report
