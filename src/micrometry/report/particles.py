"""Particle report figures: overlays with particle ids, descriptor histograms and ECDFs, PSD curves,
measured against true size distributions, compare verdicts.

Tables are read through :mod:`micrometry.report.columns`, so the ImageJ names
(``Area`` + ``Unit``) and names carrying units (``Area_um2``) both work.
"""

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
from micrometry.particles.compare_run import REPORT_HTML, BatchComparison
from micrometry.particles.morphometry import with_unit_names
from micrometry.particles.psd import cumulative_distribution
from micrometry.report.columns import descriptor_label, particle_columns, particle_unit
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


def id_positions(labels: np.ndarray, ids: np.ndarray | None = None) -> list[tuple[int, float, float]]:
    """Where to write each particle's id: ``(id, x, y)`` at the pixel deepest inside the particle.

    The deepest pixel (largest distance to the background) lies inside even a
    concave particle, where its centroid may not. ``ids`` limits the list (e.g.
    to the particles of the table); default every id in ``labels``.
    """
    present = np.unique(labels[labels > 0])
    ids = present if ids is None else np.intersect1d(present, np.asarray(ids, dtype=present.dtype))
    if ids.size == 0:
        return []
    depth = ndimage.distance_transform_edt(labels > 0)
    positions = ndimage.maximum_position(depth, labels, ids)
    return [(int(i), float(c), float(r)) for i, (r, c) in zip(ids, positions, strict=False)]


def overlay_figure(sample: OverlaySample, ids: np.ndarray | None = None) -> Figure:
    """Particle outlines (red) over the gray image (or a tinted label image), each particle's id written on it.

    ``ids``: the particles to number (those of the table); others get outlines only.
    """
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
    fig = Figure(figsize=(10.5, 10.5 * height / max(width, 1)))  # the page is ~1100 px wide: use it
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.95))  # the image fills the figure; the title sits above it
    ax.imshow(rgb, interpolation="antialiased")
    positions = id_positions(labels, ids)
    # ids shrink with crowding, but never below what a reader can make out
    size = float(np.clip(10 - len(positions) / 40, 6.5, 10))
    for label, x, y in positions:
        ax.text(
            x,
            y,
            str(label),
            color="yellow",
            fontsize=size,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.1", "fc": "black", "alpha": 0.55, "lw": 0},
        )
    ax.set_title(f"{sample.name}: {len(np.unique(labels)) - (labels == 0).any()} particles", fontsize=11)
    ax.axis("off")
    return fig


def _panels(n: int, cols: int = 4) -> tuple[Figure, list]:
    """A figure with ``n`` small panels on a grid ``cols`` wide."""
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(3.4 * cols, 2.9 * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _finite(column: pd.Series) -> np.ndarray:
    """A descriptor's finite values (AR of a one-pixel particle can be infinite)."""
    return column.replace([np.inf, -np.inf], np.nan).dropna().to_numpy()


def histogram_figure(tables: dict[str, pd.DataFrame], descriptors: list[str] | None = None) -> Figure:
    """Histograms of the main descriptors, one panel each; one colour per table."""
    tables = {name: particle_columns(t) for name, t in tables.items()}
    descriptors = [d for d in (descriptors or HISTOGRAM_DESCRIPTORS) if all(d in t for t in tables.values())]
    fig, axes = _panels(len(descriptors))
    unit = particle_unit(next(iter(tables.values())))
    density = len(tables) > 1  # batches of different sizes are compared by shape, not by count
    for ax, descriptor in zip(axes, descriptors, strict=False):
        values = [_finite(t[descriptor]) for t in tables.values()]
        pooled = np.concatenate(values) if values else np.zeros(0)
        bins = np.histogram_bin_edges(pooled, bins=30) if pooled.size else 10
        for (name, _), v in zip(tables.items(), values, strict=False):
            ax.hist(v, bins=bins, alpha=0.55, density=density, label=name)
        ax.set_xlabel(descriptor_label(descriptor, unit), fontsize=10)
        ax.set_ylabel(_density_label(descriptor, unit) if density else "particles", fontsize=10)
        ax.tick_params(labelsize=9)
    if len(tables) > 1 and fig.axes:
        fig.axes[0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def _density_label(descriptor: str, unit: str) -> str:
    """Y label of a density histogram: a density has the inverse unit of its x axis."""
    label = descriptor_label(descriptor, unit)
    return f"density (1/{label[label.index('(') + 1 : -1]})" if label.endswith(")") else "density"


def ecdf_figure(tables: dict[str, pd.DataFrame], descriptors: list[str]) -> Figure:
    """Empirical CDFs of each descriptor for each table (where a KS statistic comes from)."""
    tables = {name: particle_columns(t) for name, t in tables.items()}
    fig, axes = _panels(len(descriptors))
    unit = particle_unit(next(iter(tables.values())))
    for ax, descriptor in zip(axes, descriptors, strict=False):
        for name, table in tables.items():
            v = np.sort(_finite(table[descriptor]))
            ax.step(v, np.arange(1, v.size + 1) / max(v.size, 1), where="post", label=name)
        ax.set_xlabel(descriptor_label(descriptor, unit), fontsize=10)
        ax.set_ylabel("fraction of particles ≤ x", fontsize=10)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=9)
    fig.axes[0].legend(fontsize=9)
    fig.tight_layout()
    return fig


def psd_figure(tables: dict[str, pd.DataFrame], size_column: str = "EqDiam") -> Figure:
    """Cumulative size distributions, number- and volume-weighted, with D10/D50/D90 levels."""
    tables = {name: particle_columns(t) for name, t in tables.items()}
    fig = Figure(figsize=(10, 3.6))
    unit = particle_unit(next(iter(tables.values())))
    for k, weighting in enumerate(("number", "volume")):
        ax = fig.add_subplot(1, 2, k + 1)
        for name, table in tables.items():
            sizes, cum = cumulative_distribution(table[size_column].to_numpy(), weighting)
            ax.plot(sizes, cum, label=name)
        for level in (10, 50, 90):
            ax.axhline(level, color="0.7", lw=0.8, ls="--")
        ax.set_xlabel(descriptor_label(size_column, unit))
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
            ax.errorbar(
                rel[mask],
                y[mask],
                xerr=[(rel - low)[mask], (high - rel)[mask]],
                fmt="o",
                color=colour,
                capsize=3,
            )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, comparison["descriptor"])
    ax.set_xlabel("median shift B - A, % of A's median (95% CI)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- overlays from a measure source


def overlay_samples(
    source: str | Path, images_dir: str | Path | None = None, limit: int = 4
) -> list[OverlaySample]:
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


def calibration_text(summary: pd.DataFrame | None, particles: pd.DataFrame) -> str:
    """The calibration line of a particle report: pixel size and unit, or 'uncalibrated'."""
    unit = particle_unit(particles)
    size = summary.iloc[0].get("PixelSize") if summary is not None and len(summary) else None
    if unit == "px":
        return "uncalibrated: lengths in pixels (px), areas in px² (measure with --pixel-size and --unit to calibrate)"
    source = summary.iloc[0].get("Calibration") if summary is not None and len(summary) else None
    by_bar = " (read from the scale bar)" if source == "scale bar" else ""
    if size is not None and size == size:
        return f"1 px = {float(size):g} {unit}{by_bar}; lengths in {unit}, areas in {unit}²"
    if by_bar:
        return f"pixel size read from each image's scale bar (per image in the image table); lengths in {unit}, areas in {unit}²"
    return f"lengths in {unit}, areas in {unit}²"


def size_comparison(measured: pd.DataFrame, true: pd.DataFrame, size_column: str = "EqDiam") -> pd.DataFrame:
    """Number- and volume-weighted D10/D50/D90 of measured and true sizes, and the measured error in %."""
    rows = []
    for weighting in ("number", "volume"):
        for level in (10, 50, 90):
            values = []
            for table in (measured, true):
                sizes, cum = cumulative_distribution(_finite(table[size_column]), weighting)
                values.append(float(np.interp(level, cum, sizes)) if sizes.size else float("nan"))
            rows.append(
                {
                    "percentile": f"D{level}",
                    "weighting": weighting,
                    "measured": values[0],
                    "true": values[1],
                    "error %": 100 * (values[0] - values[1]) / values[1] if values[1] else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def measure_report(
    particles: pd.DataFrame,
    images: pd.DataFrame | None = None,
    summary: pd.DataFrame | None = None,
    overlays: list[OverlaySample] | None = None,
    title: str = "Particle morphometry",
    truth: pd.DataFrame | None = None,
) -> Report:
    """Report of one measure run: key results, PSD (against the truth when given), descriptor histograms,
    overlays with particle ids, particle and per-image tables (whole tables as CSV downloads).

    ``truth``: a particle table of the true particles of the same images, for measured vs true sizes.
    """
    particles_as_read = particles
    particles = particle_columns(particles)
    unit = particle_unit(particles)
    original = with_unit_names(particles_as_read, unit)  # the CSV download names units as measure's files do
    report = Report(title, calibration=calibration_text(summary, particles))
    if summary is not None and len(summary):
        s = summary.iloc[0]
        report.key_result("particles", f"{int(s['Count'])}", f"in {int(s['Images'])} images")
        report.key_result(
            "D50 (number-weighted)",
            f"{s['D50_n']:.3g} {unit}",
            f"95% CI {s['D50_n_low']:.3g}..{s['D50_n_high']:.3g} {unit}",
        )
        report.key_result("D10 / D90 (number)", f"{s['D10_n']:.3g} / {s['D90_n']:.3g} {unit}")
        report.key_result("coverage", f"{100 * s['Coverage']:.1f} %", "area covered by particles")
        report.section("Summary")
        report.text(
            f"{int(s['Count'])} particles in {int(s['Images'])} images (source: {s.get('Source', '?')}); "
            f"coverage {100 * s['Coverage']:.1f} %; border-touching particles "
            f"{'excluded' if bool(s.get('ExcludeEdges', False)) else 'included'} "
            f"({int(s.get('TouchingBorder', 0))} touch the border)."
        )
        report.table(psd_table(s, unit), csv_name="psd.csv")
        if "VolumeWeighting" in s:
            report.text(f"Volume-weighted percentiles assume {s['VolumeWeighting']}.")
        if "CountNeeded_D50_n" in s:
            _count_adequacy(report, s)
        if "Agglomerates" in s:
            report.text(
                f"Flags: {int(s['Touching'])} particles touch another particle and {int(s['Agglomerates'])} "
                "are probable agglomerates (columns Touching and Agglomerate of the particle table; rule: "
                "EqDiam at least 1.3 x the image's median and Solidity or Convexity below 0.90)."
            )
        _unreliable_notes(report, particles, images)
    elif len(particles):
        report.key_result("particles", f"{len(particles)}")
        report.section("Summary")
        report.text(f"{len(particles)} particles.")
    if len(particles):
        report.section("Particle size distribution")
        if truth is not None and len(truth):
            truth = particle_columns(truth)
            compared = size_comparison(particles, truth)
            d50 = compared.iloc[1]
            report.key_result(
                "D50 error vs truth",
                f"{d50['error %']:+.1f} %",
                f"measured {d50['measured']:.3g} vs true {d50['true']:.3g} {unit}",
            )
            report.figure(
                psd_figure({"measured": particles, "true": truth}),
                f"Measured ({len(particles)} particles) against true ({len(truth)} particles) "
                f"area-equivalent diameter distributions.",
            )
            report.table(
                compared.rename(columns={"measured": f"measured ({unit})", "true": f"true ({unit})"}),
                csv_name="psd_vs_truth.csv",
            )
            report.figure(
                histogram_figure({"measured": particles, "true": truth}, ["EqDiam", "AR", "Circ."]),
                "Measured and true distributions (density).",
            )
        else:
            report.figure(psd_figure({"all": particles}), "Cumulative area-equivalent diameter distribution.")
            report.note("No truth given (--truth): measured sizes are not compared with true ones.")
        report.section("Shape distributions (ISO 9276-6)")
        shape = shape_distribution_table(particles)
        if len(shape):
            report.table(shape, csv_name="shape_distributions.csv")
            report.figure(
                histogram_figure({"all": particles}, list(shape["descriptor"])),
                "Distributions of the shape ratios: shape is reported as a distribution, not a mean.",
            )
        report.section("Descriptors")
        report.figure(histogram_figure({"all": particles}), "Histograms of the main shape descriptors.")
        described = (
            particles.describe()
            .T.reset_index()
            .rename(columns={"index": "descriptor"})
            .drop(columns=["count"], errors="ignore")
            .loc[lambda d: ~d["descriptor"].isin(["Label", "BX", "BY", "Width", "Height", "X", "Y"])]
        )
        described["descriptor"] = [descriptor_label(d, unit) for d in described["descriptor"]]
        report.table(described, csv_name="descriptor_statistics.csv")
    if overlays:
        report.section("Overlays")
        report.text(
            "Numbers on the particles are their ids: the Label column of the particle table, "
            "for the rows whose Image is the overlay's name."
        )
        for sample in overlays:
            ids = _table_ids(particles, sample.name)
            report.figure(
                overlay_figure(sample, ids), f"{sample.name}: measured outlines and particle ids", colours=128
            )
    if len(particles):
        report.section("Particles")
        shown = [
            c
            for c in [
                "Image",
                "Reliable",
                "Label",
                "Area",
                "EqDiam",
                "Feret",
                "MinFeret",
                "AR",
                "Circ.",
                "Solidity",
                "TouchesBorder",
            ]
            if c in particles
        ]
        report.table(
            particles[shown].rename(columns={c: descriptor_label(c, unit) for c in shown}),
            csv_name="particles.csv",
            full=original,
        )
    if images is not None and len(images):
        report.section("Per image")
        cols = [
            c
            for c in [
                "Image",
                "Reliable",
                "UnreliableReason",
                "Count",
                "TouchingBorder",
                "Coverage",
                "D10_n",
                "D50_n",
                "D90_n",
                "D50_n_low",
                "D50_n_high",
                "D50_v",
            ]
            if c in images
        ]
        names = {c: f"{c} ({unit})" for c in cols if c.startswith("D")} | {"Coverage": "Coverage (fraction)"}
        flagged = _unreliable_rows(images)
        report.table(
            images[cols].rename(columns=names),
            csv_name="images.csv",
            full=images,
            highlight=flagged if flagged.any() else None,
        )
    return report


def _unreliable_rows(table: pd.DataFrame) -> pd.Series:
    """True for the rows whose image's segmentation was judged unreliable (none without the column)."""
    if "Reliable" not in table:
        return pd.Series(False, index=table.index)
    return table["Reliable"].astype(str).str.lower().isin(["false", "0"])


def _unreliable_notes(report: Report, particles: pd.DataFrame, images: pd.DataFrame | None) -> None:
    """A key result and a note when some rows come from images whose segmentation is unreliable."""
    source = images if images is not None and "Reliable" in images else particles
    if "Reliable" not in source or "Image" not in source:
        return
    flagged = _unreliable_rows(source)
    names = list(dict.fromkeys(source.loc[flagged, "Image"].astype(str)))
    if not names:
        return
    total = source["Image"].nunique()
    in_flagged = int(_unreliable_rows(particles).sum()) if "Reliable" in particles else None
    report.key_result(
        "unreliable images",
        f"{len(names)} of {total}",
        "segmentation not to be trusted" + (f": {in_flagged} particles" if in_flagged is not None else ""),
    )
    reasons = []
    if images is not None and "UnreliableReason" in images:
        reasons = [
            f"{name}: {reason}"
            for name, reason in zip(
                images.loc[flagged, "Image"], images.loc[flagged, "UnreliableReason"], strict=False
            )
        ]
    report.note(
        f"{len(names)} of {total} images have a segmentation judged unreliable (column Reliable = False): their "
        "particles are in the tables and figures below, but their numbers should not be used before the "
        "images are checked. " + " ".join(reasons[:5])
    )


def _table_ids(particles: pd.DataFrame, image: str) -> np.ndarray | None:
    """Label ids of one image's rows in the particle table (None: the table does not say)."""
    if "Label" not in particles or "Image" not in particles:
        return None
    return particles.loc[particles["Image"].astype(str) == image, "Label"].to_numpy()


def _count_adequacy(report: Report, s: pd.Series) -> None:
    """Key result, table and warning of the count adequacy of a measure summary row."""
    from micrometry.particles.psd import adequacy_warning

    table = adequacy_table(s)
    count = int(s["Count"])
    d90 = table.iloc[1]
    report.key_result(
        "D90 (number) precision",
        f"±{d90['precision (±%, 95 %)']:.1f} %",
        "count adequate"
        if d90["met"] == "yes"
        else f"±{100 * s['PrecisionTarget']:g} % needs {d90['particles needed']:,}",
    )
    report.text(
        f"Count adequacy (ISO 13322-1): the relative 95 % confidence half-width each percentile reaches with "
        f"{count} particles, and the particles a ±{100 * s['PrecisionTarget']:g} % half-width needs "
        "(asymptotic variance of a sample quantile; docs/morphometry.md)."
    )
    report.table(table, csv_name="count_adequacy.csv")
    line = adequacy_warning(s, count)
    if line:
        report.note(line)


def adequacy_table(s: pd.Series) -> pd.DataFrame:
    """The count adequacy of a summary row: per percentile the achieved precision and the count needed."""
    rows = []
    for name, tag in (("D50", "n"), ("D90", "n"), ("D50", "v"), ("D90", "v")):
        needed = int(s[f"CountNeeded_{name}_{tag}"])
        rows.append(
            {
                "percentile": name,
                "weighting": "number" if tag == "n" else "volume",
                "precision (±%, 95 %)": 100 * float(s[f"Precision_{name}_{tag}"]),
                "particles needed": needed,
                "met": "yes" if 0 <= needed <= int(s["Count"]) else "no",
            }
        )
    return pd.DataFrame(rows)


def shape_distribution_table(particles: pd.DataFrame) -> pd.DataFrame:
    """P10/P50/P90 and the mean of each shape ratio (ISO 9276-6: shape as a distribution)."""
    from micrometry.particles.measure import SHAPE_DISTRIBUTION_COLUMNS

    rows = []
    for column in SHAPE_DISTRIBUTION_COLUMNS:
        if column not in particles:
            continue
        values = _finite(particles[column])
        if not values.size:
            continue
        p10, p50, p90 = np.percentile(values, [10, 50, 90])
        rows.append({"descriptor": column, "P10": p10, "P50": p50, "P90": p90, "mean": float(values.mean())})
    return pd.DataFrame(rows)


def psd_table(summary_row: pd.Series, unit: str) -> pd.DataFrame:
    """D10/D50/D90 number- and volume-weighted with CIs, from a summary row."""
    rows = []
    for tag, weighting in (("n", "number"), ("v", "volume")):
        for level in (10, 50, 90):
            key = f"D{level}_{tag}"
            rows.append(
                {
                    "percentile": f"D{level}",
                    "weighting": weighting,
                    f"value ({unit})": summary_row[key],
                    f"95% CI low ({unit})": summary_row[f"{key}_low"],
                    f"95% CI high ({unit})": summary_row[f"{key}_high"],
                }
            )
    return pd.DataFrame(rows)


def decided_by(row: pd.Series, alpha: float) -> str:
    """Which criterion of the decision rule settled a descriptor's verdict (see particles.compare)."""
    if row["changed"]:
        return "all three criteria met"
    if row["significant"]:
        return "effect size below the relevance threshold"
    if row["ks_pvalue"] >= alpha:
        return f"KS test not significant (p ≥ {alpha:g})"
    return "median-shift CI includes 0"


def compare_report(
    a: pd.DataFrame,
    b: pd.DataFrame,
    comparison: pd.DataFrame,
    rule: str | dict,
    names: tuple[str, str] = ("A", "B"),
    title: str = "Batch comparison",
) -> Report:
    """Report of a batch comparison: verdicts, statistics table, shift plot, ECDFs, histograms, PSDs.

    ``rule``: the decision rule of ``compare.json`` (its ``text``, or the whole dict: then the
    verdicts are reworded from the statistics, so older compare folders read like new ones).
    """
    from micrometry.particles.compare import CompareSettings, verdict

    a, b = particle_columns(a), particle_columns(b)
    unit = particle_unit(a)
    rule_text = rule["text"] if isinstance(rule, dict) else rule
    comparison = comparison.copy()
    settings = (
        CompareSettings(**{k: rule[k] for k in ("alpha", "confidence") if k in rule})
        if isinstance(rule, dict)
        else CompareSettings()
    )
    if "unit" in comparison:  # a CSV read back gives NaN for the empty unit of ratios
        comparison["unit"] = comparison["unit"].fillna("")
    if isinstance(rule, dict) and {"significant", "name", "unit"} <= set(comparison.columns):
        comparison["verdict"] = [verdict(row, settings) for row in comparison.to_dict(orient="records")]
    if "significant" in comparison:
        comparison["decided by"] = [decided_by(row, settings.alpha) for _, row in comparison.iterrows()]
    calibration = (
        f"lengths in {unit}, areas in {unit}²"
        if unit != "px"
        else "uncalibrated: lengths in pixels (px), areas in px²"
    )
    report = Report(title, calibration=calibration)
    changed = comparison[comparison["changed"]]
    report.key_result(f"particles {names[0]} / {names[1]}", f"{len(a)} / {len(b)}")
    report.key_result(
        "descriptors changed",
        f"{len(changed)} of {len(comparison)}",
        ", ".join(changed["descriptor"]) if len(changed) else "none practically relevant",
    )
    report.section("Verdict")
    report.text(
        f"{names[0]}: {len(a)} particles; {names[1]}: {len(b)} particles. "
        + (
            f"{len(changed)} of {len(comparison)} descriptors changed."
            if len(changed)
            else f"None of the {len(comparison)} descriptors changed in a practically relevant way."
        )
    )
    report.bullets(comparison["verdict"].tolist())
    report.text(
        f"Decision rule: {rule_text}. The 'decided by' column of the table below names the criterion "
        "that settled each verdict."
    )
    report.section("Statistics")
    # the widest columns (Wasserstein, KS statistic, CIs of the medians) stay in the CSV
    cols = [
        "descriptor",
        "unit",
        "median_a",
        "median_b",
        "shift",
        "shift_low",
        "shift_high",
        "threshold",
        "ks_pvalue",
        "cliffs_delta",
        "changed",
        "decided by",
    ]
    report.table(
        comparison[[c for c in cols if c in comparison]],
        highlight=comparison["changed"],
        max_rows=len(comparison),
        csv_name="compare.csv",
        full=comparison,
    )
    report.figure(shift_figure(comparison), "Median shift per descriptor relative to A (red: changed).")
    tables = {names[0]: a, names[1]: b}
    report.section("Distributions")
    report.figure(ecdf_figure(tables, comparison["descriptor"].tolist()), "Empirical CDFs.")
    report.figure(histogram_figure(tables), "Histograms (density).")
    if "EqDiam" in a and "EqDiam" in b:
        report.figure(psd_figure(tables), "Cumulative size distributions.")
    return report


def write_compare_report(result: BatchComparison, folder: Path) -> Path:
    """Write ``folder/report.html`` for a comparison of :func:`~micrometry.particles.compare_run.run_compare`."""
    path = Path(folder) / REPORT_HTML
    compare_report(result.a, result.b, result.comparison, result.summary["rule"], names=result.names).write(
        path
    )
    return path


def true_particles(truth: Path | None, summary: pd.DataFrame | None) -> pd.DataFrame | None:
    """The true particle table for ``--truth``: a table as is, else measured at the report's calibration."""
    if truth is None:
        return None
    from micrometry.particles.measure import measure_source, read_table

    if truth.suffix.lower() in (".csv", ".parquet"):
        table = read_table(truth)
        # the synthesiser's truth lists every particle drawn; only the annotated ones can be found
        return table[table["annotated"].astype(bool)] if "annotated" in table else table
    s = summary.iloc[0] if summary is not None and len(summary) else {}
    return measure_source(
        truth, pixel_size=float(s.get("PixelSize", 1.0)), unit=str(s.get("Unit", "px")), n_boot=100
    ).particles


def require_columns(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    named = particle_columns(table).columns  # Area_um2 counts as Area
    missing = [c for c in columns if c not in named]
    if missing:
        raise InputError(f"not a 'particles measure' table: missing column(s) {', '.join(missing)}", path)
