"""Report of ``micrometry depth frame`` output: each frame with its holes coloured by depth, the
defect holes ringed, histograms of depth and CDs, per-frame statistics and the flagged holes.

The figures are shared with the web app's Frames tab (:func:`frame_figure`, :func:`histogram_figure`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from micrometry.errors import InputError
from micrometry.report.html import Report

DEFECT_STYLE = {  # ring colour and label of each defect class
    "not_open": ("#e8112d", "not open"),
    "under_etched": ("#ff8c00", "under-etched"),
    "merged": ("#d63bd6", "merged"),
    "missing": ("#00b7ff", "missing"),
}
MAX_FRAME_FIGURES = 6
HISTOGRAM_COLUMNS = (
    ("depth_nm", "depth (nm)"),
    ("top_cd_x_nm", "top CD x (nm)"),
    ("top_cd_y_nm", "top CD y (nm)"),
    ("sidewall_angle_deg", "sidewall angle (deg)"),
)


def is_frame_output(path: Path) -> bool:
    """Whether ``path`` is a ``depth frame`` output folder (``holes.csv`` and ``summary.json``)."""
    return path.is_dir() and (path / "holes.csv").is_file() and (path / "summary.json").is_file()


def frame_figure(image: np.ndarray, holes: pd.DataFrame, title: str = "", size_in: float = 7.5):
    """The frame in gray with each measured hole as a dot coloured by its depth (one scale, a
    colour bar in nm) and each defect hole ringed in its class's colour (legend)."""
    import matplotlib.pyplot as plt

    rows, cols = image.shape
    fig, ax = plt.subplots(figsize=(size_in, size_in * rows / cols * 0.92 + 0.4))
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest", alpha=0.55)
    depth = pd.to_numeric(holes["depth_nm"], errors="coerce")
    measured = holes["status"].isin(["ok", "partial"]) & depth.notna()
    normal = measured & (holes["defect"].fillna("") == "")
    ref = depth[normal] if normal.any() else depth[measured]
    lo, hi = np.percentile(ref, [1, 99]) if len(ref) else (0.0, 1.0)
    hi = max(hi, lo + 1.0)
    # a dot over each hole's opening, a ring around it: sizes follow the frame's scale (points^2)
    points_per_px = 72.0 * size_in * 0.85 / cols
    dot = (24.0 * points_per_px) ** 2
    points = ax.scatter(
        holes["x_px"][measured],
        holes["y_px"][measured],
        c=depth[measured],
        cmap="viridis",
        vmin=lo,
        vmax=hi,
        s=dot,
        edgecolors="black",
        linewidths=0.3,
    )
    fig.colorbar(points, ax=ax, fraction=0.04, pad=0.02, label="predicted depth (nm)")
    border = holes["status"] == "border"
    ax.scatter(
        holes["x_px"][border], holes["y_px"][border], s=dot * 0.5, c="#bbbbbb", marker="x", linewidths=0.6
    )
    for name, (colour, label) in DEFECT_STYLE.items():
        these = holes["defect"].fillna("") == name
        if these.any():
            ax.scatter(
                holes["x_px"][these],
                holes["y_px"][these],
                s=dot * 3.2,
                facecolors="none",
                edgecolors=colour,
                linewidths=2.2,
                label=f"{label} ({int(these.sum())})",
            )
    if (holes["defect"].fillna("") != "").any():
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85, markerscale=0.45)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(title or "holes coloured by depth; defects ringed; x: cut by the border", fontsize=10)
    return fig


def histogram_figure(holes: pd.DataFrame):
    """Histograms of depth, top CDs and sidewall angle of the measured unflagged holes (flagged
    holes' depths stacked in red)."""
    import matplotlib.pyplot as plt

    measured = holes["status"].isin(["ok", "partial"])
    flagged = holes["defect"].fillna("") != ""
    fig, axes = plt.subplots(1, len(HISTOGRAM_COLUMNS), figsize=(12, 2.8))
    for ax, (column, label) in zip(axes, HISTOGRAM_COLUMNS, strict=True):
        values = pd.to_numeric(holes[column], errors="coerce")
        normal = values[measured & ~flagged].dropna()
        odd = values[measured & flagged].dropna()
        both = pd.concat([normal, odd])
        if len(both):
            bins = np.histogram_bin_edges(both, bins=30)
            ax.hist(
                [normal, odd],
                bins=bins,
                stacked=True,
                color=["#3b6ea5", "#e8112d"],
                label=["normal", "flagged"],
            )
            if len(normal) > 1:
                ax.set_title(f"mean {normal.mean():.1f}, 3 sigma {3 * normal.std():.1f}", fontsize=9)
        ax.set_xlabel(label)
    axes[0].set_ylabel("holes")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def summary_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """One row per frame: counts, mean and 3-sigma of depth and top CDs, the depth trend, defects."""
    rows = []
    for name, s in summaries.items():
        st, tr = s["statistics"], s["trend"]["depth_nm"]
        rows.append(
            {
                "frame": name,
                "measured": s["status"]["ok"] + s["status"]["partial"],
                "border": s["status"]["border"],
                "depth_mean_nm": st["depth_nm"]["mean"],
                "depth_3sigma_nm": st["depth_nm"]["three_sigma"],
                "top_cd_x_mean_nm": st["top_cd_x_nm"]["mean"],
                "top_cd_x_3sigma_nm": st["top_cd_x_nm"]["three_sigma"],
                "top_cd_y_mean_nm": st["top_cd_y_nm"]["mean"],
                "top_cd_y_3sigma_nm": st["top_cd_y_nm"]["three_sigma"],
                "depth_tilt_x_nm": tr["tilt_x"],
                "depth_tilt_y_nm": tr["tilt_y"],
                "depth_bowl_nm": tr["bowl"],
                **{k: v for k, v in s["defects"].items()},
            }
        )
    return pd.DataFrame(rows)


def _frame_image(name: str, summary: dict, sem: Path | None) -> np.ndarray | None:
    from micrometry.io.image import read_image, to_gray_u8

    for candidate in (
        Path(summary["source"]) if summary.get("source") else None,
        sem / name if sem else None,
    ):
        if candidate is not None and candidate.is_file():
            return to_gray_u8(read_image(candidate))
    return None


def frames_report(folder: Path, sem: Path | None = None) -> Report:
    """The report of a ``depth frame`` output folder; ``sem``: folder of the frames, if they moved."""
    try:
        summaries = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["frames"]
        holes = pd.read_csv(folder / "holes.csv", keep_default_na=False, na_values=[""])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"incomplete or damaged depth frame output ({exc})", folder) from None
    holes["defect"] = holes["defect"].fillna("")
    nm = next(iter(summaries.values()), {}).get("nm_per_px", float("nan"))
    report = Report("Hole arrays: depth and defects per frame", calibration=f"{nm:g} nm per pixel")
    measured = holes["status"].isin(["ok", "partial"])
    normal = measured & (holes["defect"] == "")
    depth = pd.to_numeric(holes["depth_nm"], errors="coerce")[normal]
    report.key_result("frames", str(len(summaries)))
    report.key_result(
        "holes measured",
        str(int(measured.sum())),
        f"{int((holes['status'] == 'border').sum())} at the border",
    )
    if len(depth) > 1:
        report.key_result(
            "depth", f"{depth.mean():.1f} nm", f"3 sigma {3 * depth.std():.1f} nm (unflagged holes)"
        )
    for name, (_, label) in DEFECT_STYLE.items():
        report.key_result(label, str(int((holes["defect"] == name).sum())))

    report.section("Frames")
    report.text(
        "Per frame: the holes measured (window inside the frame), mean and 3-sigma of the depth and top CDs "
        "over the holes not flagged, the depth trend across the frame (tilt: centre to side; bowl: centre to "
        "corner; nm) and the defect holes. Rules: docs/depth.md, 'Frames'."
    )
    report.table(summary_table(summaries), float_format="{:.2f}", csv_name="frames.csv")
    for k, (name, summary) in enumerate(summaries.items()):
        these = holes[holes["frame"] == name]
        report.section(f"Frame {name}")
        image = _frame_image(name, summary, sem)
        if k >= MAX_FRAME_FIGURES:
            report.note(f"figures shown for the first {MAX_FRAME_FIGURES} frames only")
        elif image is None:
            report.note(f"the frame image {name} was not found (give --sem FOLDER): no overview figure")
        else:
            report.figure(
                frame_figure(image, these), f"{name}: holes coloured by predicted depth, defects ringed"
            )
        if k < MAX_FRAME_FIGURES and (these["status"].isin(["ok", "partial"])).any():
            report.figure(
                histogram_figure(these), f"{name}: depth, top CDs and sidewall angle of the measured holes"
            )
        flagged = these[these["defect"] != ""]
        columns = [
            "hole",
            "x_px",
            "y_px",
            "defect",
            "status",
            "depth_nm",
            "depth_low_nm",
            "depth_high_nm",
            "unlike_training_data",
        ]
        if len(flagged):
            report.table(flagged[columns], float_format="{:.1f}", csv_name=f"{Path(name).stem}_flagged.csv")
        else:
            report.text("No hole flagged.")
    return report
