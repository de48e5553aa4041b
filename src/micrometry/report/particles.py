"""Particle report figures: overlays, descriptor histograms and ECDFs, PSD curves, compare verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage
from skimage.segmentation import find_boundaries

from micrometry.errors import InputError
from micrometry.particles.psd import cumulative_distribution
from micrometry.report.html import Report

# Descriptors shown in the histogram grid (ImageJ names).
HISTOGRAM_DESCRIPTORS = ["EqDiam", "Feret", "MinFeret", "AR", "Circ.", "Solidity", "Round", "Convexity"]


@dataclass
class OverlaySample:
    """One image and its label image, for an outline overlay."""

    name: str
    labels: np.ndarray
    image: np.ndarray | None = None


# --------------------------------------------------------------------------- figures


def overlay_figure(sample: OverlaySample) -> Figure:
    """Particle outlines (red) over the gray image, or over a tinted label image without one."""
    labels = sample.labels
    if sample.image is not None:
        gray = sample.image.astype(np.float64)
        gray = (gray - gray.min()) / max(np.ptp(gray), 1e-9)
        rgb = np.repeat(gray[..., None], 3, axis=-1)
    else:
        rng = np.random.default_rng(0)
        palette = np.vstack([[0.1, 0.1, 0.1], rng.uniform(0.35, 0.9, size=(int(labels.max()) + 1, 3))])
        rgb = palette[np.where(labels > 0, labels + 1, 0)]
    height, width = labels.shape
    outline = find_boundaries(labels, mode="inner")
    # the figure is ~600 px wide: thicken outlines of large images so they survive downsampling
    thickness = max(1, round(max(height, width) / 600))
    if thickness > 1:
        outline = ndimage.binary_dilation(outline, iterations=thickness - 1) & (labels > 0)
    rgb[outline] = [1.0, 0.15, 0.1]
    fig = Figure(figsize=(6, 6 * height / max(width, 1)))
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="antialiased")
    ax.set_title(f"{sample.name}: {len(np.unique(labels)) - (labels == 0).any()} particles")
    ax.axis("off")
    return fig


def _panels(n: int, cols: int = 4) -> tuple[Figure, list]:
    """A figure with ``n`` small panels on a grid ``cols`` wide."""
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _finite(column: pd.Series) -> np.ndarray:
    """A descriptor's finite values (AR of a one-pixel particle can be infinite)."""
    return column.replace([np.inf, -np.inf], np.nan).dropna().to_numpy()


def histogram_figure(tables: dict[str, pd.DataFrame], descriptors: list[str] | None = None) -> Figure:
    """Histograms of the main descriptors, one panel each; one colour per table."""
    descriptors = [d for d in (descriptors or HISTOGRAM_DESCRIPTORS) if all(d in t for t in tables.values())]
    fig, axes = _panels(len(descriptors))
    unit = _unit(next(iter(tables.values())))
    for ax, descriptor in zip(axes, descriptors):
        values = [_finite(t[descriptor]) for t in tables.values()]
        pooled = np.concatenate(values) if values else np.zeros(0)
        bins = np.histogram_bin_edges(pooled, bins=30) if pooled.size else 10
        for (name, _), v in zip(tables.items(), values):
            ax.hist(v, bins=bins, alpha=0.55, density=len(tables) > 1, label=name)
        ax.set_title(_label(descriptor, unit), fontsize=9)
        ax.tick_params(labelsize=7)
    if len(tables) > 1:
        fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def ecdf_figure(tables: dict[str, pd.DataFrame], descriptors: list[str]) -> Figure:
    """Empirical CDFs of each descriptor for each table (where a KS statistic comes from)."""
    fig, axes = _panels(len(descriptors))
    unit = _unit(next(iter(tables.values())))
    for ax, descriptor in zip(axes, descriptors):
        for name, table in tables.items():
            v = np.sort(_finite(table[descriptor]))
            ax.step(v, np.arange(1, v.size + 1) / max(v.size, 1), where="post", label=name)
        ax.set_title(_label(descriptor, unit), fontsize=9)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def psd_figure(tables: dict[str, pd.DataFrame], size_column: str = "EqDiam") -> Figure:
    """Cumulative size distributions, number- and volume-weighted, with D10/D50/D90 levels."""
    fig = Figure(figsize=(10, 3.6))
    unit = _unit(next(iter(tables.values())))
    for k, weighting in enumerate(("number", "volume")):
        ax = fig.add_subplot(1, 2, k + 1)
        for name, table in tables.items():
            sizes, cum = cumulative_distribution(table[size_column].to_numpy(), weighting)
            ax.plot(sizes, cum, label=name)
        for level in (10, 50, 90):
            ax.axhline(level, color="0.7", lw=0.8, ls="--")
        ax.set_xlabel(_label(size_column, unit))
        ax.set_ylabel(f"cumulative % ({weighting})")
        ax.set_title(f"{weighting}-weighted PSD")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def shift_figure(comparison: pd.DataFrame) -> Figure:
    """Relative median shift of each descriptor with its CI; changed ones in red."""
    fig = Figure(figsize=(7, 0.35 * len(comparison) + 1.2))
    ax = fig.add_subplot()
    scale = comparison["median_a"].abs().replace(0, np.nan)
    rel = 100 * comparison["shift"] / scale
    low = 100 * comparison["shift_low"] / scale
    high = 100 * comparison["shift_high"] / scale
    y = np.arange(len(comparison))[::-1]
    changed = comparison["changed"].to_numpy(bool)
    for mask, colour in ((changed, "tab:red"), (~changed, "tab:gray")):
        if mask.any():
            ax.errorbar(rel[mask], y[mask], xerr=[(rel - low)[mask], (high - rel)[mask]], fmt="o",
                        color=colour, capsize=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, comparison["descriptor"])
    ax.set_xlabel("median shift B - A, % of A's median (95% CI)")
    fig.tight_layout()
    return fig


def _unit(table: pd.DataFrame) -> str:
    return str(table["Unit"].iloc[0]) if "Unit" in table and len(table) else "px"


def _label(descriptor: str, unit: str) -> str:
    from micrometry.particles.morphometry import AREA_COLUMNS, LENGTH_COLUMNS

    if descriptor in LENGTH_COLUMNS:
        return f"{descriptor} ({unit})"
    if descriptor in AREA_COLUMNS:
        return f"{descriptor} ({unit}²)"
    return descriptor


# --------------------------------------------------------------------------- overlays from a measure source


def overlay_samples(source: str | Path, images_dir: str | Path | None = None, limit: int = 4) -> list[OverlaySample]:
    """Label images (and, when found, the gray images) of the first ``limit`` images of a measure source.

    Gray images come from ``images_dir`` (matched by file stem) or, for a COCO
    instances file, from its images folder; without them outlines are drawn on
    the tinted labels.
    """
    from micrometry.io.image import list_images, read_image
    from micrometry.particles.label_sources import iter_label_images

    source = Path(source)
    if not source.exists():
        return []
    _, items = iter_label_images(source)
    by_stem = {p.stem: p for p in list_images(images_dir)} if images_dir is not None else {}
    samples = []
    for item in islice(items, limit):
        image = read_image(by_stem[item.name]) if item.name in by_stem else None
        if image is not None and image.shape != item.labels.shape:
            image = None
        samples.append(OverlaySample(item.name, item.labels, image))
    return samples


# --------------------------------------------------------------------------- whole reports


def measure_report(particles: pd.DataFrame, images: pd.DataFrame | None = None,
                   summary: pd.DataFrame | None = None, overlays: list[OverlaySample] | None = None,
                   title: str = "Particle morphometry") -> Report:
    """Report of one measure run: summary, PSD, descriptor histograms, overlays, per-image table."""
    report = Report(title)
    unit = _unit(particles)
    if summary is not None and len(summary):
        s = summary.iloc[0]
        report.section("Summary")
        report.text(f"{int(s['Count'])} particles in {int(s['Images'])} images (source: {s.get('Source', '?')}); "
                    f"coverage {100 * s['Coverage']:.1f} %; border-touching particles "
                    f"{'excluded' if bool(s.get('ExcludeEdges', False)) else 'included'} "
                    f"({int(s.get('TouchingBorder', 0))} touch the border).")
        report.table(psd_table(s, unit))
    elif len(particles):
        report.section("Summary")
        report.text(f"{len(particles)} particles.")
    if len(particles):
        report.section("Particle size distribution")
        report.figure(psd_figure({"all": particles}), "Cumulative area-equivalent diameter distribution.")
        report.section("Descriptors")
        report.figure(histogram_figure({"all": particles}), "Histograms of the main shape descriptors.")
        report.table(particles.describe().T.reset_index().rename(columns={"index": "descriptor"})
                     .drop(columns=["count"], errors="ignore")
                     .loc[lambda d: ~d["descriptor"].isin(["Label", "BX", "BY", "Width", "Height", "X", "Y"])])
    if overlays:
        report.section("Overlays")
        for sample in overlays:
            report.figure(overlay_figure(sample), f"{sample.name}: measured outlines")
    if images is not None and len(images):
        report.section("Per image")
        cols = [c for c in ["Image", "Count", "TouchingBorder", "Coverage", "D10_n", "D50_n", "D90_n",
                            "D50_n_low", "D50_n_high", "D50_v"] if c in images]
        report.table(images[cols])
    return report


def psd_table(summary_row: pd.Series, unit: str) -> pd.DataFrame:
    """D10/D50/D90 number- and volume-weighted with CIs, from a summary row."""
    rows = []
    for tag, weighting in (("n", "number"), ("v", "volume")):
        for level in (10, 50, 90):
            key = f"D{level}_{tag}"
            rows.append({"percentile": f"D{level}", "weighting": weighting,
                         f"value ({unit})": summary_row[key], "95% CI low": summary_row[f"{key}_low"],
                         "95% CI high": summary_row[f"{key}_high"]})
    return pd.DataFrame(rows)


def compare_report(a: pd.DataFrame, b: pd.DataFrame, comparison: pd.DataFrame, rule_text: str,
                   names: tuple[str, str] = ("A", "B"), title: str = "Batch comparison") -> Report:
    """Report of a batch comparison: verdicts, statistics table, shift plot, ECDFs, histograms, PSDs."""
    report = Report(title)
    report.section("Verdict")
    changed = comparison[comparison["changed"]]
    report.text(f"{names[0]}: {len(a)} particles; {names[1]}: {len(b)} particles. "
                + (f"{len(changed)} of {len(comparison)} descriptors changed." if len(changed)
                   else f"None of the {len(comparison)} descriptors changed in a practically relevant way."))
    report.bullets(comparison["verdict"].tolist())
    report.text(f"Decision rule: {rule_text}")
    report.section("Statistics")
    cols = ["descriptor", "unit", "median_a", "median_b", "shift", "shift_low", "shift_high", "threshold",
            "wasserstein", "ks_statistic", "ks_pvalue", "cliffs_delta", "changed"]
    report.table(comparison[cols], highlight=comparison["changed"])
    report.figure(shift_figure(comparison), "Median shift per descriptor relative to A (red: changed).")
    tables = {names[0]: a, names[1]: b}
    report.section("Distributions")
    report.figure(ecdf_figure(tables, comparison["descriptor"].tolist()), "Empirical CDFs.")
    report.figure(histogram_figure(tables), "Histograms (density).")
    if "EqDiam" in a and "EqDiam" in b:
        report.figure(psd_figure(tables), "Cumulative size distributions.")
    return report


def require_columns(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"not a 'particles measure' table: missing column(s) {', '.join(missing)}", path)
