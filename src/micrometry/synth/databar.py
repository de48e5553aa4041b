"""Synthetic SEM-style micrographs with a burned-in data bar (scale bar, its label, tool settings).

Electron microscopes write a band along the bottom (sometimes the top) of every
image: a solid background, a scale bar of a round physical length, its label
("200 nm", "1 µm"), and the tool's settings ("EHT = 5.00 kV  WD = 6.1 mm ...").
These images test :mod:`micrometry.io.scalebar`: the truth (pixel size, bar
length, the band's rows) comes with each image.

The scale bar's length is the label's value over the instrument's pixel size,
rounded to whole pixels as instruments draw it; the true pixel size is the
instrument's, so a reader is off by up to half a pixel over the bar length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from micrometry.io.scalebar import font_paths, load_font

#: Label units as microscopes write them, and their size in micrometres.
UNIT_SPELLINGS = {"nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0, "mm": 1e3}
#: Round bar values (in the label's unit) instruments choose from.
NICE_VALUES = (1, 2, 5, 10, 20, 50, 100, 200, 500)


@dataclass
class DataBarStyle:
    """How one data bar looks.

    ``polarity`` "dark" is a black band with white marks (most SEMs), "light" the
    reverse; ``label_place`` puts the label above, below, right or left of the bar.
    """

    height_px: int = 48
    position: str = "bottom"  # or "top"
    polarity: str = "dark"  # or "light"
    font: Path | None = None
    font_px: int = 16
    label_place: str = "above"  # "above", "below", "right", "left"
    bar_x_frac: float = 0.62  # where the scale bar's left end sits, as a fraction of the width
    bar_thickness_px: int = 4
    end_ticks: bool = False
    settings_text: str = "EHT = 5.00 kV   WD = 6.1 mm   Signal A = InLens"


@dataclass
class DataBarTruth:
    """What a reader should find."""

    pixel_size: float  # in ``unit`` per pixel: the instrument's, not the bar's rounded ratio
    unit: str  # canonical: nm, um or mm
    label: str  # as written, e.g. "200 nm"
    bar_px: int  # drawn length
    band_rows: tuple[int, int]  # [start, stop) rows of the data bar in the image
    bar_box: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))  # x0, y0, x1, y1 of the scale bar


def canonical_unit(unit: str) -> str:
    """``nm``, ``um`` or ``mm`` for any spelling of the unit (µm, μm, um)."""
    return "um" if unit in ("µm", "μm", "um") else unit


def nice_bar(width_px: int, pixel_size: float, unit: str, rng: np.random.Generator) -> tuple[float, int]:
    """A round value (in ``unit``) whose bar is 12-30 % of the image width, and its length in pixels."""
    candidates = {float(f"{v * s:.6g}") for v in NICE_VALUES for s in (0.01, 0.1, 1, 10, 100)}
    values = sorted(v for v in candidates if 0.12 <= v / pixel_size / width_px <= 0.30)
    if not values:
        raise ValueError(f"no round bar fits {width_px} px at {pixel_size:g} {unit}/px")
    value = float(values[int(rng.integers(len(values)))])
    return value, int(round(value / pixel_size))


def draw_databar(
    image: np.ndarray,
    pixel_size: float,
    unit: str = "nm",
    style: DataBarStyle | None = None,
    rng: np.random.Generator | None = None,
    value: float | None = None,
) -> tuple[np.ndarray, DataBarTruth]:
    """Add a data bar to a gray micrograph.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` uint8 micrograph; the band is added below (or above) it, so the
        result is ``(H + height_px, W)``.
    pixel_size : float
        The instrument's pixel size in ``unit`` (the label's spelling: nm, um, µm, mm).
    style : DataBarStyle
        Look and layout; default :class:`DataBarStyle`.
    value : float, optional
        The bar's value in ``unit``; default a round value 12-30 % of the width.

    Returns
    -------
    (ndarray, DataBarTruth)
    """
    from PIL import Image, ImageDraw

    rng = rng or np.random.default_rng(0)
    style = style or DataBarStyle()
    h, w = image.shape
    if value is None:
        value, bar_px = nice_bar(w, pixel_size, unit, rng)
    else:
        bar_px = int(round(value / pixel_size))
    bg, fg = (0, 255) if style.polarity == "dark" else (255, 0)
    band = Image.new("L", (w, style.height_px), bg)
    draw = ImageDraw.Draw(band)
    font = load_font(style.font, style.font_px)
    label = f"{value:g} {unit}"
    lx0, ly0, lx1, ly1 = draw.textbbox((0, 0), label, font=font)
    label_w, label_h = lx1 - lx0, ly1 - ly0
    t = style.bar_thickness_px
    x0 = int(style.bar_x_frac * w)
    x0 = min(x0, w - bar_px - (label_w + 12 if style.label_place == "right" else 4))
    if style.label_place == "above":
        text_y = (style.height_px - label_h - t - 6) // 2
        bar_y = text_y + label_h + 6
        text_x = x0 + (bar_px - label_w) // 2
    elif style.label_place == "below":
        bar_y = (style.height_px - label_h - t - 6) // 2
        text_y = bar_y + t + 6
        text_x = x0 + (bar_px - label_w) // 2
    elif style.label_place == "left":
        x0 = max(x0, label_w + 30)
        bar_y = (style.height_px - t) // 2
        text_y = (style.height_px - label_h) // 2
        text_x = x0 - 10 - label_w
    else:
        bar_y = (style.height_px - t) // 2
        text_y = (style.height_px - label_h) // 2
        text_x = x0 + bar_px + 10
    draw.rectangle([x0, bar_y, x0 + bar_px - 1, bar_y + t - 1], fill=fg)
    box_top = bar_y
    if style.end_ticks:
        tick = max(t + 4, 8)
        top = bar_y + t // 2 - tick // 2
        draw.rectangle([x0, top, x0 + 1, top + tick - 1], fill=fg)
        draw.rectangle([x0 + bar_px - 2, top, x0 + bar_px - 1, top + tick - 1], fill=fg)
        box_top = min(bar_y, top)
    draw.text((text_x - lx0, text_y - ly0), label, font=font, fill=fg)
    # the tool settings at the band's left, in the same font, away from the bar
    settings_font = load_font(style.font, max(9, int(style.font_px * 0.8)))
    sx1 = draw.textbbox((0, 0), style.settings_text, font=settings_font)[2]
    if 8 + sx1 < min(x0, text_x) - 20:  # only where it fits left of the bar and its label
        sy = (style.height_px - draw.textbbox((0, 0), "Ag", font=settings_font)[3]) // 2
        draw.text((8, sy), style.settings_text, font=settings_font, fill=fg)
    band_arr = np.asarray(band)
    if style.position == "top":
        out, rows = np.vstack([band_arr, image]), (0, style.height_px)
        offset = 0
    else:
        out, rows = np.vstack([image, band_arr]), (h, h + style.height_px)
        offset = h
    truth = DataBarTruth(
        pixel_size=pixel_size,
        unit=canonical_unit(unit),
        label=label,
        bar_px=bar_px,
        band_rows=rows,
        bar_box=(x0, offset + box_top, x0 + bar_px, offset + bar_y + t),
    )
    return out.astype(np.uint8), truth


def sem_discs(
    height: int = 384,
    width: int = 512,
    centres: list[tuple[float, float]] | None = None,
    radius: float = 26.0,
    dark: bool = True,
    noise: float = 8.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A clean SEM-like field of discs: gray background, blurred edges, shot-like noise.

    Returns the uint8 image and the true label image. The default is the issue's
    example: six dark discs in two rows.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    if centres is None:
        centres = [(height * fy, width * fx) for fy in (0.3, 0.7) for fx in (0.2, 0.5, 0.8)]
    yy, xx = np.mgrid[:height, :width]
    labels = np.zeros((height, width), np.int32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    field_ = np.where(labels > 0, 60.0 if dark else 200.0, 150.0 if dark else 90.0)
    field_ = ndimage.gaussian_filter(field_, 1.5) + rng.normal(0, noise, field_.shape)
    return np.clip(field_, 0, 255).astype(np.uint8), labels


def random_style(rng: np.random.Generator, fonts: list[Path] | None = None) -> DataBarStyle:
    """A data bar style drawn at random: font, size, position, polarity, label place, ticks."""
    fonts = font_paths() if fonts is None else fonts
    font_px = int(rng.integers(12, 27))
    return DataBarStyle(
        height_px=int(font_px * 2 + 20 + rng.integers(0, 16)),
        position=str(rng.choice(["bottom", "bottom", "top"])),
        polarity=str(rng.choice(["dark", "light"])),
        font=fonts[int(rng.integers(len(fonts)))] if fonts else None,
        font_px=font_px,
        label_place=str(rng.choice(["above", "below", "right", "left"])),
        bar_x_frac=float(rng.uniform(0.45, 0.7)),
        bar_thickness_px=int(rng.integers(2, 8)),
        end_ticks=bool(rng.random() < 0.3),
    )


def random_sem_with_databar(seed: int, fonts: list[Path] | None = None) -> tuple[np.ndarray, DataBarTruth]:
    """One random SEM-like image with a random data bar (unit nm, um, µm or mm)."""
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(256, 640)), int(rng.integers(384, 1024))
    image, _ = sem_discs(
        height, width, radius=float(rng.uniform(8, 30)), dark=bool(rng.random() < 0.5), seed=seed
    )
    unit = str(rng.choice(["nm", "um", "µm", "mm"]))
    # a pixel size whose round bar values in this unit read naturally (e.g. 1-50 nm/px)
    base = {"nm": 10.0, "um": 0.05, "µm": 0.05, "mm": 0.002}[unit]
    pixel_size = base * float(np.exp(rng.uniform(-1.2, 1.2)))
    return draw_databar(image, pixel_size, unit, random_style(rng, fonts), rng)


def write_databar_images(out, truth, n: int = 20, seed: int = 0, overwrite: bool = False) -> int:
    """Write ``n`` SEM-style images with data bars to ``out`` and their scale bars to ``truth/scale_bars.csv``.

    The first image is the six-disc example (a ``500 nm`` bar at 4 nm/px); the others are
    :func:`random_sem_with_databar` of seeds ``seed``, ``seed + 1``, ... Both folders appear
    whole or not at all. Returns the number of images.
    """
    import pandas as pd

    from micrometry.io.atomic import atomic_dir
    from micrometry.io.image import write_image

    rows = []
    with atomic_dir(out, overwrite) as out_tmp, atomic_dir(truth, overwrite) as truth_tmp:
        for k in range(n):
            if k == 0:
                image, _ = sem_discs()
                fonts = font_paths()
                full, bar = draw_databar(image, 4.0, "nm", DataBarStyle(font=fonts[0] if fonts else None))
            else:
                full, bar = random_sem_with_databar(seed + k)
            name = f"sem_{k:04d}.png"
            write_image(out_tmp / name, full)
            rows.append(
                {
                    "file": name,
                    "pixel_size": bar.pixel_size,
                    "unit": bar.unit,
                    "label": bar.label,
                    "bar_px": bar.bar_px,
                    "band_start": bar.band_rows[0],
                    "band_stop": bar.band_rows[1],
                }
            )
        pd.DataFrame(rows).to_csv(truth_tmp / "scale_bars.csv", index=False)
    return n
