"""What the web app does with an upload, free of any HTTP detail (tested directly).

Models load lazily on first use and are shared by all requests; a lock keeps
two requests from loading the same model twice.
"""

from __future__ import annotations

import base64
import contextvars
import io
import threading
import time
from pathlib import Path

import numpy as np

from micrometry.errors import InputError
from micrometry.io.image import decode_image
from micrometry.web import columns
from micrometry.web.options import NM_PER_PX, PIXEL_SIZE, UNIT
from micrometry.web.uploads import Limits, expand_uploads

__all__ = ["Limits", "RequestBudget", "Services", "expand_uploads"]

MAX_FRAMES = 4  # CD-SEM frames per Frames request (each up to max_particle_pixels)
MAX_SHOWN_MAPS = 24  # depth maps shown (and selectable for the 3-D view); the table and zip hold all
WEB_TILE = 256  # network pixels per tile: a particle request's memory stays ~250 MB whatever the image size
COLORMAP = "viridis"


def png_data_url(array: np.ndarray) -> str:
    """Encode a uint8/uint16 image (gray or RGB) as a PNG data URL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure_data_url(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def file_data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def csv_data_url(table) -> str:
    """The table as CSV: 6 significant digits (not 16), missing values as empty cells."""
    return file_data_url(table.to_csv(index=False, float_format="%.6g").encode(), "text/csv")


class RequestCancelled(Exception):
    """The client of a request went away: its work stops at the next check."""


class RequestTooLong(InputError):
    """A request ran past :attr:`Limits.max_request_seconds` (answered 400 with the limit)."""


class RequestBudget:
    """What one request may still spend: a deadline, and a flag set when its client disconnects.

    The request's work checks it between images and stages, and the models check
    it before every network pass (:func:`watch_modules`), so a stopped request
    frees its worker within one tile's time.
    """

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.cancelled = threading.Event()

    def check(self) -> None:
        if self.cancelled.is_set():
            raise RequestCancelled
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise RequestTooLong(
                f"stopped after {self.seconds:g} s, the limit per upload: send fewer or smaller images "
                "(or run `micrometry particles predict` on large jobs)"
            )


# The budget of the request the current thread works for (run_in_threadpool copies context variables).
CURRENT_BUDGET: contextvars.ContextVar[RequestBudget | None] = contextvars.ContextVar(
    "micrometry_request_budget", default=None
)


def check_budget() -> None:
    """Stop the current request's work when its client left or its time is up (no-op outside a request)."""
    budget = CURRENT_BUDGET.get()
    if budget is not None:
        budget.check()


def watch_modules(model, depth: int = 3) -> None:
    """Make every torch network a model holds check the current request's budget before each forward pass."""
    import torch

    seen: set[int] = set()

    def visit(obj, level: int) -> None:
        if id(obj) in seen or level > depth:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            obj.register_forward_pre_hook(lambda module, args: check_budget())
            return
        children = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else None
        if children is None:
            children = vars(obj).values() if hasattr(obj, "__dict__") else ()
        for child in children:
            if not isinstance(child, (str, bytes, int, float, np.ndarray)):
                visit(child, level + 1)

    visit(model, 0)


class Services:
    """The two jobs behind the web page.

    Parameters
    ----------
    depth_model : path, optional
        "shipped", a depth run folder or an exported model folder; default: the shipped model.
    particle_model : str or path, optional
        A particle model name, "shipped", a run folder or an exported model folder; default: the shipped model.
    """

    def __init__(
        self,
        depth_model: str | Path | None = None,
        particle_model: str | Path | None = None,
        limits: Limits | None = None,
    ):
        self.depth_model_path = depth_model
        self.particle_model_name = particle_model
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._depth = None
        self._segmenter = None

    # -- models ----------------------------------------------------------------
    def depth_model(self):
        with self._lock:
            if self._depth is None:
                from micrometry.depth.methods import load_depth_model

                self._depth = load_depth_model(self.depth_model_path or "shipped")
                watch_modules(self._depth)
            return self._depth

    def segmenter(self):
        with self._lock:
            if self._segmenter is None:
                from micrometry.particles.models import load_particle_model

                self._segmenter = bounded_tiles(load_particle_model(self.particle_model_name))
                watch_modules(self._segmenter)
            return self._segmenter

    # -- SEM tab ---------------------------------------------------------------
    def sem(self, files: list[tuple[str, bytes]], nm_per_px: float = NM_PER_PX) -> dict:
        """Depth maps (shared nm colour scale), heights for the 3-D view, metrology table, CSV and zip."""
        from micrometry.depth.dataset import IMAGE_SHAPE, sem_image
        from micrometry.depth.measure import hole_table, measure_maps
        from micrometry.depth.predict import predict_in_batches, submission_zip, to_depth_png

        uploads = expand_uploads(files, self.limits, self.limits.max_sem_images)
        images = np.stack(
            [
                sem_image(decode_image(data, name, self.limits.max_sem_pixels, shape=IMAGE_SHAPE), name)
                for name, data in uploads
            ]
        )
        check_budget()
        depth = predict_in_batches(self.depth_model(), images)
        depth_u8 = to_depth_png(depth)
        names = [name for name, _ in uploads]
        table = columns.depth_table(
            hole_table(names, measure_maps(depth_u8.astype(np.float32), nm_per_px=nm_per_px))
        )
        zipped = submission_zip(names, depth)
        shown = min(len(uploads), MAX_SHOWN_MAPS)
        lo, hi = float(np.floor(depth[:shown].min())), float(np.ceil(depth[:shown].max()))
        hi = max(hi, lo + 1.0)
        return {
            "count": len(uploads),
            "nm_per_px": nm_per_px,
            "scale": {"lo": lo, "hi": hi, "unit": "nm", "colours": colour_stops()},
            "samples": [
                {
                    "name": uploads[i][0],
                    "sem": png_data_url(images[i]),
                    "depth": png_data_url(colourise(depth[i], lo, hi)),
                    "heights": np.round(depth[i], 1).tolist(),
                }
                for i in range(shown)
            ],
            "table": records(table),
            "csv": csv_data_url(table),
            "zip": file_data_url(zipped, "application/zip"),
        }

    # -- Frames tab --------------------------------------------------------------
    def frames(self, files: list[tuple[str, bytes]], nm_per_px: float = NM_PER_PX) -> dict:
        """Every hole of each uploaded CD-SEM frame (``depth frame``): per frame an overview (holes
        coloured by depth, defects ringed), histograms and the summary; all holes as CSV."""
        import json

        import pandas as pd

        from micrometry.depth.frames import HOLE_COLUMNS, analyse_frame, json_safe
        from micrometry.report.frames import frame_figure, histogram_figure

        if not (np.isfinite(nm_per_px) and nm_per_px > 0):
            raise InputError(f"nm per pixel must be a finite number > 0, got {nm_per_px}")
        uploads = expand_uploads(files, self.limits, MAX_FRAMES)
        frames, tables, summaries = [], [], {}
        for name, data in uploads:
            check_budget()
            image = decode_image(data, name, self.limits.max_particle_pixels)
            try:
                result = analyse_frame(self.depth_model(), image, nm_per_px)
            except InputError as exc:
                raise InputError(exc.message, name) from None
            holes = pd.DataFrame({c: result.holes[c] for c in HOLE_COLUMNS})
            holes.insert(0, "frame", name)
            s = result.summary
            summaries[name] = s
            frames.append(
                {
                    "name": name,
                    "width": int(image.shape[1]),
                    "height": int(image.shape[0]),
                    "overview": figure_data_url(frame_figure(result_image(image), holes, size_in=8.0)),
                    "histograms": figure_data_url(histogram_figure(holes)),
                    "measured": s["status"]["ok"] + s["status"]["partial"],
                    "border": s["status"]["border"],
                    "depth_mean_nm": json_safe(round(s["statistics"]["depth_nm"]["mean"], 2)),
                    "depth_3sigma_nm": json_safe(round(s["statistics"]["depth_nm"]["three_sigma"], 2)),
                    "defects": s["defects"],
                }
            )
            tables.append(holes)
            del image
        table = pd.concat(tables, ignore_index=True)
        flagged = table[table["defect"] != ""].round(
            {"x_px": 1, "y_px": 1, "depth_nm": 2, "depth_high_nm": 2}
        )
        return {
            "count": len(frames),
            "nm_per_px": nm_per_px,
            "frames": frames,
            "flagged": records(
                flagged[["frame", "hole", "x_px", "y_px", "defect", "status", "depth_nm", "depth_high_nm"]]
            ),
            "csv": csv_data_url(table),
            "summary": file_data_url(
                json.dumps({"frames": json_safe(summaries)}, indent=2).encode(), "application/json"
            ),
        }

    # -- Particles tab -----------------------------------------------------------
    def particles(
        self,
        files: list[tuple[str, bytes]],
        pixel_size: float | str = PIXEL_SIZE,
        unit: str = UNIT,
        exclude_edges: bool = False,
    ) -> dict:
        """Per image an overlay with particle ids and the reliability verdict
        (:mod:`micrometry.particles.reliability`); one table for all images (column ``reliable``),
        D10/D50/D90, histograms, CSV.

        ``pixel_size="auto"`` reads each image's scale bar (the CLI's ``--pixel-size auto``):
        the data bar is left out of the segmentation, each image is measured at its own
        pixel size in the first image's unit, and an unreadable scale bar is refused.
        """
        import pandas as pd

        from micrometry.options import MAX_PIXEL_SIZE, MIN_PIXEL_SIZE, check_number
        from micrometry.particles.databar import band_of, convert, scale_bar_record, segment_without_bar
        from micrometry.particles.morphometry import measure_labels
        from micrometry.particles.predict import overlay
        from micrometry.particles.reliability import assess_reliability

        auto = pixel_size == "auto"
        if not auto:
            check_number(pixel_size, "pixel size", MIN_PIXEL_SIZE, MAX_PIXEL_SIZE, allow_none=False)
        uploads = expand_uploads(files, self.limits, self.limits.max_particle_images)
        images, tables, left_out, calibrations = [], [], 0, []
        unit = None if auto else unit
        for name, data in uploads:
            check_budget()
            image = decode_image(data, name, self.limits.max_particle_pixels)
            size = pixel_size
            if auto:
                bar = scale_bar_record(image, name)
                unit = unit or bar["unit"]
                size = convert(bar["pixel_size"], bar["unit"], unit)
                found = segment_without_bar(self.segmenter(), image, band_of(bar))
                calibrations.append({"image": name, **bar, "pixel_size": size, "unit": unit})
            else:
                found = self.segmenter().segment(image)
            labels = found.labels
            verdict = assess_reliability(labels, found.scores, found.info)
            check_budget()
            table = measure_labels(labels, pixel_size=size, unit=unit)
            border = columns.particle_column(table, columns.PARTICLE_BORDER)
            edge_ids = (
                table.loc[table[border], columns.PARTICLE_ID].to_numpy() if border else np.zeros(0, int)
            )
            if exclude_edges and border:
                table = table[~table[border]].reset_index(drop=True)
                left_out += len(edge_ids)
            kept = table[columns.PARTICLE_ID].to_numpy()
            table.insert(0, "image", name)
            table.insert(1, "reliable", verdict.reliable)
            tables.append(table)
            images.append(
                {
                    "name": name,
                    "width": int(image.shape[1]),
                    "height": int(image.shape[0]),
                    "overlay": png_data_url(_overlay(overlay, image, labels, kept, edge_ids)),
                    "particles": markers(labels, kept),
                    "reliable": verdict.reliable,
                    "reason": verdict.reason,
                }
            )
            del image, labels, found  # one image in memory at a time
        table = pd.concat(tables, ignore_index=True)
        return {
            "count": int(len(table)),
            "left_out": left_out,
            "unit": unit,
            "id_column": columns.PARTICLE_ID,
            "images": images,
            "calibrations": calibrations,
            "psd": size_percentiles(table, unit),
            "iso": iso_summary(table),
            "histograms": histograms(table),
            "table": records(table, headers=[columns.particle_header(str(c), unit) for c in table.columns]),
            "csv": csv_data_url(table),
        }


def bounded_tiles(segmenter):
    """Cap a tiled segmenter's tile size so a request's memory does not grow with the model's default tile.

    Tiles are stitched at the level of the network's maps, so the instances are
    those of one pass; only memory and speed change (768 -> 256 px tiles: 1.6 GB
    -> 0.25 GB and 2x faster on a 2048x2048 photo).
    """
    tiled = getattr(segmenter, "base", segmenter)  # under test-time augmentation, the model it runs
    if isinstance(getattr(tiled, "tile", None), int) and isinstance(getattr(tiled, "overlap", None), int):
        tiled.tile = min(tiled.tile, WEB_TILE)
        tiled.overlap = min(tiled.overlap, tiled.tile // 2)
    return segmenter


def markers(labels: np.ndarray, ids: np.ndarray) -> list[dict]:
    """Where to draw each particle's id on its overlay: centroid and equal-area radius, in pixels."""
    from scipy import ndimage

    if len(ids) == 0:
        return []
    centres = ndimage.center_of_mass(np.ones(labels.shape, np.uint8), labels, ids)
    areas = ndimage.sum_labels(np.ones(labels.shape, np.uint8), labels, ids)
    return [
        {
            "id": int(i),
            "x": round(float(c[1]) + 0.5, 1),
            "y": round(float(c[0]) + 0.5, 1),
            "r": round(float(np.sqrt(a / np.pi)), 1),
        }
        for i, c, a in zip(ids, centres, areas, strict=False)
    ]


def size_percentiles(table, unit: str) -> dict:
    """Number-weighted D10/D50/D90 of the equivalent diameter with 95 % bootstrap intervals."""
    from micrometry.particles.psd import percentiles_with_ci

    size = columns.particle_column(table, columns.PARTICLE_SIZE)
    if size is None:
        return {}
    result = percentiles_with_ci(table[size].to_numpy(), "number", n_boot=200)
    rows = {
        name: {k: (None if not np.isfinite(v) else round(float(v), 4)) for k, v in rec.items()}
        for name, rec in result.iterrows()
    }
    return {"column": size, "unit": unit, "weighting": "number", "values": rows}


def iso_summary(table) -> dict:
    """What an ISO 13322-1 / 9276-6 report adds to the percentiles: count adequacy, flags, shape.

    ``adequacy``: per percentile (D50/D90, number/volume) the achieved relative 95 % CI
    half-width and the particles +-5 % needs; ``warning``: the CLI's line when the count
    falls short; ``flags``: touching and agglomerate counts; ``shape``: P10/P50/P90 of each
    shape ratio; ``volume_assumption``: what volume weighting assumes.
    """
    from micrometry.particles.measure import SHAPE_DISTRIBUTION_COLUMNS, flag_counts, shape_quantiles
    from micrometry.particles.psd import VOLUME_ASSUMPTION, adequacy_row, adequacy_warning

    size = columns.particle_column(table, columns.PARTICLE_SIZE)
    if size is None or len(table) == 0:
        return {}
    sizes = table[size].to_numpy(dtype=float)
    row = adequacy_row(sizes)

    def clean(v):
        return None if v is None or not np.isfinite(v) else round(float(v), 4)

    adequacy = [
        {
            "percentile": f"{name} ({'number' if tag == 'n' else 'volume'})",
            "precision": clean(row[f"Precision_{name}_{tag}"]),
            "count_needed": int(row[f"CountNeeded_{name}_{tag}"]),
            "adequate": bool(0 <= row[f"CountNeeded_{name}_{tag}"] <= len(sizes)),
        }
        for name, tag in (("D50", "n"), ("D90", "n"), ("D50", "v"), ("D90", "v"))
    ]
    quantiles = shape_quantiles(table)
    shape = [
        {"descriptor": c, **{f"P{p}": clean(quantiles[f"{c.rstrip('.')}_P{p}"]) for p in (10, 50, 90)}}
        for c in SHAPE_DISTRIBUTION_COLUMNS
        if c in table
    ]
    return {
        "count": int(len(sizes)),
        "target": row["PrecisionTarget"],
        "confidence": row["Confidence"],
        "adequacy": adequacy,
        "warning": adequacy_warning(row, len(sizes)),
        "flags": flag_counts(table),
        "shape": shape,
        "volume_assumption": VOLUME_ASSUMPTION,
    }


def histograms(table) -> str:
    """Histograms of the main descriptors (titles with units), pooled over the run's images."""
    from micrometry.report.particles import histogram_figure

    found = [c for c in (columns.particle_column(table, b) for b in columns.HISTOGRAM_COLUMNS) if c]
    fig = histogram_figure({"all images": table}, found)
    for ax in fig.axes:
        ax.set_ylabel("particles", fontsize=8)
    return figure_data_url(fig)


def records(table, headers: list[str] | None = None) -> dict:
    """A table as JSON: column names, display headers, rows with missing values as null."""
    rounded = table.round(4)
    cols = [str(c) for c in rounded.columns]
    rows = rounded.astype(object).where(rounded.notna(), None).values.tolist()
    return {"columns": cols, "headers": headers or cols, "rows": rows}


def colour_stops(n: int = 9) -> list[str]:
    """The colour map as ``n`` CSS colours, low to high (the page draws the colour bar from them)."""
    from matplotlib import colormaps

    rgb = colormaps[COLORMAP](np.linspace(0, 1, n))[:, :3]
    return ["#" + "".join(f"{int(round(c * 255)):02x}" for c in row) for row in rgb]


def colourise(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Heights (nm) as RGB on the shared scale ``lo..hi`` nm, so every thumbnail reads off one colour bar."""
    from matplotlib import colormaps

    scaled = np.clip((depth.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return (colormaps[COLORMAP](scaled)[..., :3] * 255).astype(np.uint8)


def _overlay(
    draw, image: np.ndarray, labels: np.ndarray, kept: np.ndarray, edge_ids: np.ndarray
) -> np.ndarray:
    """Outlines of the measured particles in colour; particles left out (touching the border) in gray."""
    from skimage.segmentation import find_boundaries

    rgb = draw(image, np.where(np.isin(labels, kept), labels, 0))
    left_out = np.setdiff1d(edge_ids, kept)
    if left_out.size:
        rgb[find_boundaries(np.where(np.isin(labels, left_out), labels, 0), mode="inner")] = 150
    return rgb


def result_image(image: np.ndarray) -> np.ndarray:
    """An uploaded frame as uint8 gray, as ``analyse_frame`` reads it."""
    from micrometry.io.image import to_gray_u8

    return image if image.dtype == np.uint8 else to_gray_u8(image)
