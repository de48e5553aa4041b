"""Depth report figures: SEM images beside predicted (and true) depth maps, error maps,
RMSE per case, and a 3-D surface of a hole.

Inputs are what the depth job writes: a folder of PNG depth maps named like the
SEM images they were predicted from (72 x 48 uint8 in the Samsung layout, any
size works), the SEM folder, and optionally a folder of true depth maps.
Simulated SEM images are named ``<base>_itr0.png`` / ``<base>_itr1.png`` while
their depth map is ``<base>.png``: the ``_itrN`` suffix is dropped when looking
for the truth.

Depth-map pixel values are heights in nm (the Samsung encoding); the lateral
pixel size (``nm_per_px``) only matters for the hole metrology (CDs, sidewall
angle), which the report measures on every predicted map, and on every true map
or from a true-geometry table (``<split>_geometry.csv`` beside the truth folder)
when the truth is given. Metrology columns are read through
:mod:`micrometry.report.columns`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from micrometry.errors import DatasetError
from micrometry.holes import FRAME_QUANTITIES
from micrometry.io.image import list_images, read_image
from micrometry.report.columns import depth_columns, quantity_label
from micrometry.report.html import Report

# Lateral pixel size of the Samsung SEM crops (and of 'micrometry synth sem'), as 'depth measure' assumes.
NM_PER_PX = 2.0
# The metrology quantities the report plots, with units in their names.
METROLOGY = ("depth_nm", "top_cd_x_nm", "bottom_cd_x_nm", "sidewall_angle_deg")

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
    return {
        Path(str(f)).stem: (f"Case_{c}" if str(c).isdigit() else str(c))
        for f, c in zip(table["file"], table["case"], strict=False)
    }


def load_depth_samples(
    pred_dir: str | Path,
    sem_dir: str | Path | None = None,
    truth_dir: str | Path | None = None,
    cases: dict[str, str] | None = None,
) -> list[DepthSample]:
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
        truth_path = (
            truth_by_path.get(rel)
            or truth_by_path.get(rel.with_name(base + rel.suffix))
            or truth_by_stem.get(path.stem)
            or truth_by_stem.get(base)
        )
        sem = read_image(sem_path).astype(np.float64) if sem_path else None
        truth = read_image(truth_path).astype(np.float64) if truth_path else None
        if truth is not None and truth.shape != pred.shape:
            raise DatasetError(
                f"truth {truth_path} is {truth.shape[::-1]} but the prediction is "
                f"{pred.shape[::-1]} (width x height)",
                path,
            )
        case = case_of(rel)
        if (
            case == "all" and truth_path is not None
        ):  # flat predictions: the truth's folders may tell the case
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
        rows.append(
            {
                "case": case,
                "images": len(members),
                "RMSE": float(np.sqrt(np.mean(err**2))),
                "MAE": float(np.mean(np.abs(err))),
                "bias": float(np.mean(err)),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


def samples_figure(samples: list[DepthSample]) -> Figure:
    """One row per sample: SEM image, predicted depth, true depth, error map (what exists).

    With the predicted depth alone, the samples stand side by side in one row instead.
    """
    has_sem = any(s.sem is not None for s in samples)
    has_truth = any(s.truth is not None for s in samples)
    columns = (
        ["SEM"] * has_sem
        + ["predicted depth (nm)"]
        + ["true depth (nm)", "error, pred - truth (nm)"] * has_truth
    )
    h, w = samples[0].pred.shape
    # a panel is the map plus its colour bar: ~1.5 in of map width, the height following the map's shape
    map_width = 1.5
    side_by_side = len(columns) == 1
    grid = (1, len(samples)) if side_by_side else (len(samples), len(columns))
    fig = Figure(figsize=(2.3 * grid[1] + 0.6, (map_width * h / max(w, 1) + 0.45) * grid[0] + 0.3))
    depth_values = np.concatenate(
        [np.r_[s.pred.ravel(), s.truth.ravel() if s.truth is not None else []] for s in samples]
    )
    vmin, vmax = np.percentile(depth_values, [0.5, 99.5])
    errs = [np.abs(s.pred - s.truth).max() for s in samples if s.truth is not None]
    elim = max(max(errs, default=1.0), 1.0)
    for r, s in enumerate(samples):
        panels = ([(s.sem, "gray", None, None)] if has_sem else []) + [(s.pred, "viridis", vmin, vmax)]
        if has_truth:
            err = None if s.truth is None else s.pred - s.truth
            panels += [(s.truth, "viridis", vmin, vmax), (err, "RdBu_r", -elim, elim)]
        for c, (array, cmap, lo, hi) in enumerate(panels):
            ax = fig.add_subplot(*grid, r + 1 if side_by_side else r * len(columns) + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if side_by_side:
                ax.set_title(f"{s.case}: {s.name}", fontsize=9)
            elif r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0 and not side_by_side:
                ax.set_ylabel(f"{s.case}\n{s.name}", fontsize=9)
            if array is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
                continue
            im = ax.imshow(array, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if cmap != "gray":
                bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
                bar.ax.tick_params(labelsize=7)
                bar.set_label("nm", fontsize=8, labelpad=1)
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
    ax.set_ylabel("RMSE (nm)")
    ax.set_title("Pixel RMSE per case (depth-map values are heights in nm)", fontsize=10)
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
        ax.plot_surface(
            xx,
            yy,
            depth,
            cmap="viridis",
            vmin=lo,
            vmax=hi,
            linewidth=0,
            antialiased=True,
            rstride=1,
            cstride=1,
        )
        ax.set_zlim(lo, hi)
        ax.set_title(f"{title} depth: {sample.name}", fontsize=9)
        ax.set_xlabel("x (px)", fontsize=8)
        ax.set_ylabel("y (px)", fontsize=8)
        ax.set_zlabel("height (nm)", fontsize=8)
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


# --------------------------------------------------------------------------- hole metrology


def metrology_table(
    samples: list[DepthSample], nm_per_px: float = NM_PER_PX, truth: bool = False
) -> pd.DataFrame:
    """Hole metrology (``depth measure``) of every predicted map, or of every true map with ``truth``.

    One row per sample: ``file``, ``case`` and the metrology columns with units in
    their names; samples without a true map get an empty row.
    """
    from micrometry.depth.measure import measure_hole

    rows = []
    for s in samples:
        height = s.truth if truth else s.pred
        values = measure_hole(height, nm_per_px=nm_per_px) if height is not None else {}
        rows.append({"file": s.name, "case": s.case, **values})
    return depth_columns(pd.DataFrame(rows))


def geometry_file(truth_dir: str | Path | None) -> Path | None:
    """The true-geometry table ``synth sem`` writes beside a truth folder (``test_depth`` -> ``test_geometry.csv``)."""
    if truth_dir is None:
        return None
    truth_dir = Path(truth_dir)
    path = truth_dir.parent / f"{truth_dir.name.removesuffix('_depth')}_geometry.csv"
    return path if path.is_file() else None


def true_metrology(
    samples: list[DepthSample], truth_dir: str | Path | None, nm_per_px: float = NM_PER_PX
) -> tuple[pd.DataFrame, str]:
    """True hole metrology per sample and where it came from.

    From the true-geometry table when one lies beside the truth folder (the drawn
    geometry, exact), else measured on the true depth maps with the same
    definitions as the predictions (so only the prediction error differs).
    """
    path = geometry_file(truth_dir)
    if path is not None:
        try:
            table = depth_columns(pd.read_csv(path))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read true-geometry table ({exc})", path) from None
        if "file" in table:
            by_stem = table.assign(stem=[Path(str(f)).stem for f in table["file"]]).drop_duplicates("stem")
            by_stem = by_stem.set_index("stem")
            rows = []
            for s in samples:
                key = s.name if s.name in by_stem.index else truth_name(s.name)
                found = by_stem.loc[key].to_dict() if key in by_stem.index else {}
                rows.append({**found, "file": s.name, "case": s.case})
            return pd.DataFrame(rows), f"the true geometry in {path}"
    return metrology_table(samples, nm_per_px, truth=True), "measured on the true depth maps"


def agreement_table(pred: pd.DataFrame, true: pd.DataFrame) -> pd.DataFrame:
    """Bland-Altman numbers per metrology quantity: holes, bias (pred - true), SD and 95 % limits of agreement."""
    rows = []
    for column in METROLOGY:
        if column not in pred or column not in true:
            continue
        diff = pred[column].to_numpy(float) - true[column].to_numpy(float)
        diff = diff[np.isfinite(diff)]
        if not diff.size:
            continue
        bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else float("nan")
        label = quantity_label(column)
        rows.append(
            {
                "quantity": label,
                "unit": label[label.rindex("(") + 1 : -1],
                "holes": diff.size,
                "bias": bias,
                "SD": sd,
                "95% limits low": bias - 1.96 * sd,
                "95% limits high": bias + 1.96 * sd,
                "mean |error|": float(np.abs(diff).mean()),
            }
        )
    return pd.DataFrame(rows)


def agreement_figure(pred: pd.DataFrame, true: pd.DataFrame, column: str = "depth_nm") -> Figure:
    """Predicted against true (with the identity line) and Bland-Altman (difference against mean)."""
    p, t = pred[column].to_numpy(float), true[column].to_numpy(float)
    ok = np.isfinite(p) & np.isfinite(t)
    cases = pred["case"].astype(str).to_numpy()
    label = quantity_label(column)
    fig = Figure(figsize=(10, 4))
    scatter, ba = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for case in sorted(set(cases[ok])):
        m = ok & (cases == case)
        scatter.scatter(t[m], p[m], s=14, alpha=0.7, label=case)
        ba.scatter((p[m] + t[m]) / 2, p[m] - t[m], s=14, alpha=0.7, label=case)
    if ok.any():
        lo, hi = float(min(p[ok].min(), t[ok].min())), float(max(p[ok].max(), t[ok].max()))
        scatter.plot([lo, hi], [lo, hi], color="k", lw=0.8, label="pred = true")
        diff = p[ok] - t[ok]
        bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else 0.0
        for value, style, text in (
            (bias, "-", f"bias {bias:+.2f}"),
            (bias + 1.96 * sd, "--", f"+1.96 SD {bias + 1.96 * sd:+.2f}"),
            (bias - 1.96 * sd, "--", f"-1.96 SD {bias - 1.96 * sd:+.2f}"),
        ):
            ba.axhline(value, color="0.3", ls=style, lw=0.9)
            ba.text(1.0, value, f" {text}", transform=ba.get_yaxis_transform(), va="center", fontsize=8)
        # keep the limit lines (and their labels) off the frame
        spread = max(np.ptp(np.r_[diff, bias + 1.96 * sd, bias - 1.96 * sd]), 1.0)
        low, high = min(diff.min(), bias - 1.96 * sd), max(diff.max(), bias + 1.96 * sd)
        ba.set_ylim(low - 0.12 * spread, high + 0.12 * spread)
    scatter.set_xlabel(f"true {label}", fontsize=10)
    scatter.set_ylabel(f"predicted {label}", fontsize=10)
    scatter.set_title("Predicted against true", fontsize=10)
    scatter.legend(fontsize=8, loc="lower right")  # the corner a good prediction leaves empty
    unit = label[label.rindex("(") + 1 : -1] if label.endswith(")") else ""
    ba.set_xlabel(f"mean of predicted and true {label}", fontsize=10)
    ba.set_ylabel(f"predicted - true ({unit})", fontsize=10)
    ba.set_title("Bland-Altman", fontsize=10)
    for ax in (scatter, ba):
        ax.tick_params(labelsize=9)
    fig.tight_layout()
    return fig


def distribution_figure(pred: pd.DataFrame, true: pd.DataFrame | None = None) -> Figure:
    """Box plots of depth, top and bottom CD and sidewall angle per case; predicted beside true when known."""
    columns = [c for c in METROLOGY if c in pred]
    cases = sorted(pred["case"].astype(str).unique())
    fig = Figure(figsize=(3.3 * len(columns), 3.4))
    sources = [("predicted", pred, "tab:blue")] + ([("true", true, "tab:orange")] if true is not None else [])
    width = 0.8 / len(sources)
    for k, column in enumerate(columns):
        ax = fig.add_subplot(1, len(columns), k + 1)
        for j, (name, table, colour) in enumerate(sources):
            if column not in table:
                continue
            data = [_finite(table.loc[table["case"].astype(str) == case, column]) for case in cases]
            positions = np.arange(len(cases)) + (j - (len(sources) - 1) / 2) * width
            keep = [i for i, d in enumerate(data) if d.size]
            if not keep:
                continue
            parts = ax.boxplot(
                [data[i] for i in keep],
                positions=positions[keep],
                widths=width * 0.9,
                patch_artist=True,
                showfliers=True,
                flierprops={"markersize": 3},
            )
            for box in parts["boxes"]:
                box.set(facecolor=colour, alpha=0.5)
            ax.plot([], [], color=colour, lw=6, alpha=0.5, label=name)
        ax.set_xticks(np.arange(len(cases)), cases, rotation=30 if len(cases) > 3 else 0, fontsize=9)
        ax.set_ylabel(quantity_label(column), fontsize=10)
        ax.tick_params(axis="y", labelsize=9)
    if len(sources) > 1 and fig.axes:
        fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _finite(values: pd.Series) -> np.ndarray:
    v = values.to_numpy(float)
    return v[np.isfinite(v)]


def depth_report(
    pred_dir: str | Path,
    sem_dir: str | Path | None = None,
    truth_dir: str | Path | None = None,
    cases: str | Path | None = None,
    n_samples: int = 6,
    title: str = "Depth from SEM",
    nm_per_px: float = NM_PER_PX,
) -> Report:
    """The whole depth report for a prediction folder (``cases``: optional CSV, see :func:`read_cases`).

    ``nm_per_px``: lateral pixel size for the hole metrology (CDs, sidewall angle).
    """
    if not nm_per_px > 0:
        raise DatasetError(f"the pixel size must be positive, got {nm_per_px} nm/px")
    samples = load_depth_samples(pred_dir, sem_dir, truth_dir, read_cases(cases) if cases else None)
    report = Report(
        title,
        calibration=f"depth-map values are heights in nm; lateral pixel size {nm_per_px:g} nm/px "
        "(CDs in nm, sidewall angles in degrees from horizontal)",
    )
    n_truth = sum(s.truth is not None for s in samples)
    n_sem = sum(s.sem is not None for s in samples)
    h, w = samples[0].pred.shape
    measured = metrology_table(samples, nm_per_px)
    true = None
    report.key_result(
        "depth maps", f"{len(samples)}", f"{w} x {h} px, {len(set(s.case for s in samples))} case(s)"
    )
    depth = _finite(measured["depth_nm"]) if "depth_nm" in measured else np.zeros(0)
    if depth.size:
        report.key_result(
            "predicted hole depth",
            f"{depth.mean():.1f} nm",
            f"SD {depth.std():.1f} nm over {depth.size} holes",
        )
    report.section("Summary")
    report.text(
        f"{len(samples)} predicted depth maps ({w} x {h} px) in {pred_dir}; "
        f"{n_sem} matched to an SEM image, {n_truth} to a true depth map."
    )
    missing = (["no SEM images (--sem), so the SEM column is left out"] if not n_sem else []) + (
        [
            "no truth (--truth), so there is no RMSE, no error map and no predicted-against-true "
            "comparison (Bland-Altman)"
        ]
        if not n_truth
        else []
    )
    if missing:
        report.note("This report lacks: " + "; ".join(missing) + ".")
    if n_truth:
        table = rmse_table(samples)
        every = table.iloc[-1]
        report.key_result(
            "pixel RMSE", f"{every['RMSE']:.3f} nm", f"over {int(every['images'])} maps with truth"
        )
        report.section("RMSE per case")
        report.table(
            table.rename(columns={"RMSE": "RMSE (nm)", "MAE": "MAE (nm)", "bias": "bias (nm)"}),
            float_format="{:.3f}",
            csv_name="rmse_per_case.csv",
        )
        report.figure(rmse_figure(table), "Pixel RMSE per case (grey: all cases pooled).")
        true, source = true_metrology(samples, truth_dir, nm_per_px)
        agreement = agreement_table(measured, true)
        if len(agreement):
            report.section("Predicted against true hole depth")
            row = agreement.iloc[0]
            report.key_result(
                "hole depth bias",
                f"{row['bias']:+.2f} nm",
                f"95% limits {row['95% limits low']:+.2f}..{row['95% limits high']:+.2f} nm",
            )
            report.text(
                f"True values: {source}. Bias = mean of predicted - true; the 95 % limits of agreement are "
                "bias ± 1.96 SD of the differences."
            )
            report.figure(
                agreement_figure(measured, true),
                "Hole depth, predicted against true, one point per "
                "image (colour: case); right: Bland-Altman plot, difference against mean with the bias and 95 % "
                "limits of agreement.",
            )
            report.table(agreement, float_format="{:.3f}", csv_name="agreement.csv")
    report.section("Samples")
    shown = (
        (["SEM image"] if n_sem else []) + ["predicted depth"] + (["true depth", "error"] if n_truth else [])
    )
    report.figure(
        samples_figure(pick_samples(samples, n_samples)),
        ", ".join(shown) + (", one sample per row." if len(shown) > 1 else " (nm) of a few samples."),
    )
    report.section("Hole metrology per case")
    failed = int(measured["depth_nm"].isna().sum()) if "depth_nm" in measured else len(measured)
    report.text(
        "Depth, top and bottom CD (along x) and sidewall angle of the central hole of every predicted map"
        + (", beside the true values" if true is not None else "")
        + ", per case. "
        + (
            f"{failed} of {len(measured)} holes could not be measured (values left empty)."
            if failed
            else f"All {len(measured)} holes were measured."
        )
    )
    report.figure(
        distribution_figure(measured, true), "Box plots per case (box: quartiles; whiskers: 1.5 IQR)."
    )
    shown = [
        c
        for c in (
            "file",
            "case",
            "status",
            *FRAME_QUANTITIES,
        )
        if c in measured
    ]
    report.table(measured[shown], float_format="{:.2f}", csv_name="hole_metrology.csv", full=measured)
    report.section("A hole in 3-D")
    hole = deepest_hole(samples)
    report.figure(surface_figure(hole), f"Surface of {hole.name} ({hole.case}).")
    return report
