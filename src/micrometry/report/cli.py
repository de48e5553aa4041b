"""``micrometry report INPUT --out report.html``: one command for both jobs' reports.

What INPUT is decides the report (:func:`detect`):

* a particle table from ``particles measure`` (``.csv``/``.parquet``; its
  ``_images``/``_summary`` tables beside it are used too) -> morphometry report;
* a ``particles compare`` output folder (``compare.json``) -> comparison report;
* a particle prediction folder (``labels/``, ``results.json``) or a folder of
  16-bit label images -> measured now, then a morphometry report;
* a folder of 8-bit PNG depth maps -> depth report (``--sem``, ``--truth``);
* a ``depth frame`` output folder (``holes.csv``, ``summary.json``) -> frames report (``--sem``: the
  frames' folder, if they moved).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from micrometry.errors import InputError
from micrometry.options import nm_per_px_option, overwrite_option


def detect(path: Path) -> str:
    """Kind of report input: 'table', 'compare', 'particles', 'depth' or 'frames'."""
    import numpy as np

    from micrometry.io.image import list_images, read_image

    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_file():
        if path.suffix.lower() in (".csv", ".parquet"):
            return "table"
        if path.suffix.lower() == ".json":
            return "compare" if path.name == "compare.json" else "particles"
        raise InputError(
            "expected a measure table (.csv/.parquet), a compare folder, a particle prediction "
            "folder or a folder of depth maps",
            path,
        )
    if (path / "compare.json").is_file():
        return "compare"
    if (path / "holes.csv").is_file() and (path / "summary.json").is_file():
        return "frames"
    if (path / "labels").is_dir() or (path / "results.json").is_file():
        return "particles"
    images = list_images(path, recursive=True)
    if not images:
        raise InputError("folder holds no table, compare output, label images or depth maps", path)
    # Label images are 16-bit (ids can exceed 255); depth maps are 8-bit.
    return "particles" if read_image(images[0]).dtype == np.uint16 else "depth"


def build_report(
    path: Path,
    sem: Path | None = None,
    truth: Path | None = None,
    images: Path | None = None,
    cases: Path | None = None,
    nm_per_px: float | None = None,
):
    """The :class:`~micrometry.report.Report` for ``path`` (see :func:`detect`)."""
    kind = detect(path)
    if kind == "frames":
        from micrometry.report.frames import frames_report

        return frames_report(path, sem)
    if kind == "depth":
        from micrometry.report.depth import NM_PER_PX, depth_report

        return depth_report(path, sem, truth, cases, nm_per_px=NM_PER_PX if nm_per_px is None else nm_per_px)
    if kind == "compare":
        return _compare_report(path if path.is_dir() else path.parent)
    from micrometry.report.particles import measure_report, overlay_samples, require_columns, true_particles

    if kind == "particles":
        from micrometry.particles.measure import measure_source

        m = measure_source(path, n_boot=200)
        return measure_report(
            m.particles,
            m.images,
            m.summary,
            overlay_samples(path, images),
            truth=true_particles(truth, m.summary),
        )
    from micrometry.particles.measure import output_paths, read_table

    main = _main_table(path)
    particles = read_table(main)
    if "verdict" in particles.columns:  # compare.csv given directly
        return _compare_report(main.parent)
    require_columns(particles, ["Area", "EqDiam"], main)
    siblings = output_paths(main)
    per_image = read_table(siblings["images"]) if siblings["images"].is_file() else None
    summary = read_table(siblings["summary"]) if siblings["summary"].is_file() else None
    source = summary.iloc[0]["Source"] if summary is not None and "Source" in summary else None
    overlays = []
    if source:
        try:
            overlays = overlay_samples(source, images)
        except InputError as exc:  # overlays are a bonus: the table alone still makes a report
            typer.secho(f"warning: no overlays ({exc})", fg=typer.colors.YELLOW, err=True)
    return measure_report(particles, per_image, summary, overlays, truth=true_particles(truth, summary))


def _main_table(path: Path) -> Path:
    """The particle table for a path that may name its ``_images``/``_summary`` sibling."""
    for tag in ("_images", "_summary"):
        if path.stem.endswith(tag):
            main = path.with_name(path.stem[: -len(tag)] + path.suffix)
            if main.is_file():
                return main
    return path


def _compare_report(folder: Path):
    import pandas as pd

    from micrometry.particles.compare_run import BATCH_A, BATCH_B, COMPARE_CSV, COMPARE_JSON
    from micrometry.report.particles import compare_report

    try:
        summary = json.loads((folder / COMPARE_JSON).read_text(encoding="utf-8"))
        comparison = pd.read_csv(folder / COMPARE_CSV)
        a, b = pd.read_parquet(folder / BATCH_A), pd.read_parquet(folder / BATCH_B)
    except (OSError, ValueError) as exc:
        raise InputError(f"incomplete or damaged compare output ({exc})", folder) from None
    names = tuple(Path(summary.get("inputs", {}).get(k, k)).stem for k in ("a", "b"))
    return compare_report(
        a, b, comparison, summary["rule"], names=names if names[0] != names[1] else ("A", "B")
    )


def report(
    source: Path = typer.Argument(
        ...,
        help="Measure table, compare folder, particle prediction folder, depth-map folder or a "
        "`depth frame` output folder.",
    ),
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
    sem: Path | None = typer.Option(
        None, "--sem", help="Depth: folder of the SEM images the maps were predicted from."
    ),
    truth: Path | None = typer.Option(
        None,
        "--truth",
        help="Depth: folder of true depth maps (RMSE, error maps, "
        "Bland-Altman). Particles: true annotations (COCO file, label folder or "
        "particle table) for measured vs true sizes.",
    ),
    cases: Path | None = typer.Option(
        None, "--cases", help="Depth: CSV with 'file' and 'case' columns, for flat folders."
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Particles: folder of the gray images, for overlays."
    ),
    nm_per_px: float = nm_per_px_option(
        "Depth: lateral pixel size in nm for the hole metrology (CDs, sidewall angle)"
    ),
    overwrite: bool = overwrite_option("report"),
) -> None:
    """Write one self-contained HTML report (figures embedded; opens offline)."""
    from micrometry.io.atomic import refuse_existing  # here: `micrometry --help` need not import numpy

    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError("the report must be an .html file", out)
    refuse_existing(out, overwrite)
    build_report(source, sem, truth, images, cases, nm_per_px).write(out)
    typer.echo(f"wrote {out}")
