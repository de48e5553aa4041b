"""Read the pixel size from a micrograph's burned-in data bar (scale bar and its label).

Electron micrographs carry a band along their bottom or top edge: a flat
background, a scale bar (a solid horizontal line, sometimes with end ticks) and
its label ("200 nm", "1 µm", "0.5 mm"), beside the tool's settings. Reading it:

1. **The band**: the run of rows at the bottom (or top) edge in which at least
   :data:`FLAT_ROW_FRACTION` of the pixels share one gray level (within a few
   levels). Micrograph rows, which carry noise, do not.
2. **The scale bar**: in the band, the foreground object (pixels far from the
   band's background) whose longest horizontal run is the longest, is at least
   :data:`MIN_BAR_PX` long and at least 4 times longer than thick. Its length is
   that run, end to end (outer edges, ticks included).
3. **The label**: the characters next to the bar (centred above or below it, or
   on its line to the right or left), each matched against glyph templates
   rendered from the fonts found on the machine (DejaVu, Liberation, Pillow's
   own) by normalised correlation, shape and relative height; the text must read
   ``NUMBER UNIT`` with unit nm, um, µm, μm or mm.

The pixel size is value / length. The confidence (0..1) is the worst glyph match;
below :data:`MIN_CONFIDENCE`, or when the band, the bar or a parseable label is
missing, :class:`ScaleBarError` says why. Limits: docs/scale-bar.md.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from micrometry.errors import InputError

#: A band row has at least this fraction of its pixels at one gray level (+- FLAT_TOLERANCE).
FLAT_ROW_FRACTION = 0.6
FLAT_TOLERANCE = 3  # gray levels of 255
MIN_BAND_ROWS = 8
WORD_GAP = 0.5  # of the text height: a narrower gap joins two glyphs into one word
SPACE = 0.5  # of the text height: a wider gap is a space, which a unit cannot contain
MAX_TEXT_ROWS = 48  # rows of text or bar between flat rows of one band
MAX_BAND_FRACTION = 0.4  # of the image height
MIN_BAR_PX = 16
#: Below this glyph-match confidence the label is not trusted.
MIN_CONFIDENCE = 0.55

#: Units a label may carry, in micrometres, and their canonical names.
UNITS = {"nm": ("nm", 1e-3), "um": ("um", 1.0), "µm": ("um", 1.0), "μm": ("um", 1.0), "mm": ("mm", 1e3)}
_LABEL = re.compile(r"^(\d+(?:[.,]\d+)?)(nm|um|µm|mm)$")

#: Characters the templates cover: the label's and, so that settings text is recognised as
#: something else, the rest of the alphanumerics and common symbols.
GLYPHS = "0123456789nmuµ" + "abcdefghijklopqrstvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ=:-%/()x"
TEMPLATE_PX = 20
#: Font sizes the templates are rendered at: small text antialiases into other shapes than large text.
TEMPLATE_SIZES = (40, 15)


class ScaleBarError(InputError):
    """No scale bar could be read with confidence (the message says what was missing)."""


@dataclass
class ScaleBar:
    """A scale bar read from an image.

    ``pixel_size`` is in ``unit`` (nm, um or mm) per pixel; ``band_rows`` the
    [start, stop) rows of the data bar, which analysis must leave out.
    """

    pixel_size: float
    unit: str
    value: float
    label: str
    bar_px: int
    confidence: float
    band_rows: tuple[int, int]
    bar_box: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        """JSON-ready record (what prediction.json stores)."""
        d = asdict(self)
        d["band_rows"], d["bar_box"] = list(self.band_rows), list(self.bar_box)
        return d


# --------------------------------------------------------------------------- the band


def _to_gray255(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {np.shape(image)}")
    if np.asarray(image).dtype == np.uint8:
        return a
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) * (255.0 / max(hi - lo, 1e-12))


def _flat_rows(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the fraction of pixels within FLAT_TOLERANCE of the row's most common level, and that level."""
    h, w = gray.shape
    width = 256 + 2 * FLAT_TOLERANCE
    hist = np.zeros((h, width), np.int64)
    step = max(1, 2_000_000 // max(w, 1))  # rows per chunk: bounded memory for the index array
    for start in range(0, h, step):
        q = np.clip(np.rint(gray[start : start + step]), 0, 255).astype(np.int64) + FLAT_TOLERANCE
        rows = q.shape[0]
        index = (np.arange(rows)[:, None] * width + q).ravel()
        hist[start : start + rows] = np.bincount(index, minlength=rows * width).reshape(rows, width)
    window = np.cumsum(hist, axis=1)
    near = window[:, 2 * FLAT_TOLERANCE :] - np.concatenate(
        [np.zeros((h, 1), np.int64), window[:, : -2 * FLAT_TOLERANCE - 1]], axis=1
    )
    mode = hist[:, FLAT_TOLERANCE : 256 + FLAT_TOLERANCE].argmax(axis=1)
    return near[np.arange(h), mode] / w, mode


def find_data_bar(image: np.ndarray) -> list[tuple[int, int]]:
    """Candidate data-bar bands: ``[start, stop)`` row ranges at the bottom and/or top edge.

    A band starts at the edge with a flat row (:data:`FLAT_ROW_FRACTION` of its
    pixels at one level B) and ends at the last flat row of level B reached
    through gaps (text, the bar) of at most :data:`MAX_TEXT_ROWS` rows; it is
    at least :data:`MIN_BAND_ROWS` and at most :data:`MAX_BAND_FRACTION` of the height.
    """
    return _bands(_to_gray255(image))


def _bands(gray: np.ndarray) -> list[tuple[int, int]]:
    """:func:`find_data_bar` on an image already scaled by :func:`_to_gray255`."""
    h = gray.shape[0]
    flat, mode = _flat_rows(gray)
    bands = []
    for rows in (np.arange(h - 1, -1, -1), np.arange(h)):  # from the bottom, then from the top
        if flat[rows[0]] < FLAT_ROW_FRACTION:
            continue
        level = mode[rows[0]]
        last, gap = 0, 0
        for k, y in enumerate(rows[: int(MAX_BAND_FRACTION * h) + 1]):
            if flat[y] >= FLAT_ROW_FRACTION and abs(int(mode[y]) - int(level)) <= FLAT_TOLERANCE:
                last, gap = k, 0
            else:
                gap += 1
                if gap > MAX_TEXT_ROWS:
                    break
        band = (h - 1 - last, h) if rows[0] == h - 1 else (0, last + 1)
        bands.append(band)
    return [(a, b) for a, b in bands if MIN_BAND_ROWS <= b - a <= MAX_BAND_FRACTION * h]


# --------------------------------------------------------------------------- glyph templates


#: Font files the templates (and micrometry.synth.databar) are rendered from, where present.
FONT_FILES = (
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSansCondensed.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "liberation/LiberationSerif-Regular.ttf",
    "liberation/LiberationMono-Regular.ttf",
    "liberation/LiberationSansNarrow-Regular.ttf",
)
FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/local/share/fonts"), Path("/usr/share/fonts"))


def font_paths() -> list[Path]:
    """The font files of :data:`FONT_FILES` found on this machine (may be empty)."""
    found = []
    for name in FONT_FILES:
        for root in FONT_DIRS:
            if (root / name).is_file():
                found.append(root / name)
                break
    return found


def load_font(path: Path | str | None, size: int):
    """A PIL font: the file at ``path``, or Pillow's bundled font when None."""
    from PIL import ImageFont

    return ImageFont.load_default(size) if path is None else ImageFont.truetype(str(path), size)


def _template_fonts() -> list:
    return [*font_paths(), None]


def _glyph_features(strength: np.ndarray) -> np.ndarray:
    """A glyph crop (0..1 ink) resized to TEMPLATE_PX square, zero mean, unit norm."""
    import cv2

    g = cv2.resize(strength.astype(np.float32), (TEMPLATE_PX, TEMPLATE_PX), interpolation=cv2.INTER_AREA)
    g = g - g.mean()
    return g.ravel() / max(float(np.linalg.norm(g)), 1e-6)


@lru_cache(maxsize=1)
def glyph_templates() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(chars, features, aspect w/h, height relative to the digit '0') of every glyph in every font."""
    from PIL import Image, ImageDraw

    chars, feats, aspects, heights = [], [], [], []
    for path, size in ((p, size) for p in _template_fonts() for size in TEMPLATE_SIZES):
        font = load_font(path, size)
        digit_h = None
        for ch in "0" + GLYPHS:
            canvas = Image.new("L", (80, 80), 0)
            ImageDraw.Draw(canvas).text((10, 10), ch, font=font, fill=255)
            a = np.asarray(canvas, dtype=np.float64) / 255.0
            ys, xs = np.nonzero(a > 0.35)
            if ys.size == 0:
                continue
            crop = a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            hh, ww = crop.shape
            if digit_h is None:
                digit_h = hh
                continue  # '0' is rendered again in its turn
            chars.append(ch)
            feats.append(_glyph_features(crop))
            aspects.append(ww / hh)
            heights.append(hh / digit_h)
    return chars, np.array(feats), np.array(aspects), np.array(heights)


def glyph_scores(strength: np.ndarray, relative_height: float) -> dict[str, float]:
    """Every character's best match score (about 0..1, over all fonts) for one glyph crop."""
    chars, feats, aspects, heights = glyph_templates()
    h, w = strength.shape
    score = feats @ _glyph_features(strength)
    score = score - 0.3 * np.abs(np.log((w / h) / aspects)) - 1.0 * np.abs(relative_height - heights)
    best: dict[str, float] = {}
    for ch, sc in zip(chars, score.tolist(), strict=True):
        if sc > best.get(ch, -np.inf):
            best[ch] = sc
    return best


def classify_glyph(strength: np.ndarray, relative_height: float) -> tuple[str, float]:
    """The best-matching character of a glyph crop and its score."""
    scores = glyph_scores(strength, relative_height)
    ch = max(scores, key=scores.get)
    return ch, scores[ch]


# --------------------------------------------------------------------------- reading


@dataclass
class _Blob:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int
    ids: list[int]

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0


def _bar_candidate(comp: np.ndarray) -> tuple[int, int]:
    """(longest horizontal run, rows whose run is >= 90 % of it) of one component mask."""
    best = 0
    runs = []
    for row in comp:
        padded = np.concatenate([[0], row.astype(np.int8), [0]])
        d = np.diff(padded)
        starts, stops = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
        r = int((stops - starts).max()) if starts.size else 0
        runs.append(r)
        best = max(best, r)
    return best, int(sum(r >= 0.9 * best for r in runs))


def _merge_glyphs(blobs: list[_Blob]) -> list[_Blob]:
    """Join components stacked in one glyph (i, j, =, :)."""
    blobs = sorted(blobs, key=lambda b: b.x0)
    merged: list[_Blob] = []
    for b in blobs:
        if merged:
            m = merged[-1]
            overlap = min(m.x1, b.x1) - max(m.x0, b.x0)
            stacked = min(m.y1, b.y1) - max(m.y0, b.y0) < 0.3 * min(m.h, b.h)
            # a glyph's inner mark (the dot of a dotted zero) lies inside the glyph's box
            inside = b.x0 >= m.x0 and b.x1 <= m.x1 and b.y0 >= m.y0 and b.y1 <= m.y1
            if (overlap >= 0.6 * min(m.w, b.w) and stacked) or inside:
                merged[-1] = _Blob(
                    min(m.x0, b.x0), min(m.y0, b.y0), max(m.x1, b.x1), max(m.y1, b.y1), m.ids + b.ids
                )
                continue
        merged.append(b)
    return merged


#: A constrained reading keeps a glyph only if its allowed character scores within this of its best one.
MAX_SCORE_LOSS = 0.12
DIGITS = "0123456789"
UNIT_GLYPHS = {"nm": "nm", "um": "um", "µm": "µm", "mm": "mm"}


def _read_run(run: list[_Blob], labels: np.ndarray, strength: np.ndarray) -> tuple[str, float]:
    """The label a run of glyphs (left to right) spells, read as NUMBER UNIT, and its confidence.

    Each glyph's characters are scored against the templates; the run is read
    as digits (one decimal dot) and a two-letter unit, each glyph taking its
    best allowed character, which must score within :data:`MAX_SCORE_LOSS` of
    the glyph's best character of any kind (so "kV" is not read as "nm").
    Returns ``("", 0)`` when it does not read so.
    """
    top = min(b.y0 for b in run)
    tallest = max(b.y1 for b in run) - top
    digit_h = max(b.h for b in run)
    glyphs: list[dict[str, float] | None] = []
    source: list[int] = []  # the blob each glyph comes from
    spaces = [k for k in range(1, len(run)) if run[k].x0 - run[k - 1].x1 >= SPACE * tallest]
    previous = None
    for k, b in enumerate(run):
        if b.h <= 0.3 * tallest and b.w <= 0.35 * tallest:
            # a dot (or comma): too small for a template; one dot rendered in two specks is one
            if not (glyphs and glyphs[-1] is None and b.x0 - previous.x1 < 0.3 * tallest):
                glyphs.append(None)
                source.append(k)
            previous = b
            continue
        previous = b
        found = _glyphs_of(b, labels, strength, digit_h)
        glyphs.extend(found)
        source.extend([k] * len(found))
    if len(glyphs) < 3 or glyphs[-1] is None or glyphs[-2] is None:
        return "", 0.0
    # the unit's glyphs share no blob with the number's, and no space falls inside the unit
    if source[-3] == source[-2] or any(k > source[-2] for k in spaces):
        return "", 0.0
    best_unit, unit_score = None, -np.inf
    for unit in UNIT_GLYPHS:
        sc = min(glyphs[-2][unit[0]], glyphs[-1][unit[1]])
        if sc > unit_score:
            best_unit, unit_score = unit, sc
    worst = unit_score
    for g, ch in zip(glyphs[-2:], best_unit, strict=True):
        if g[ch] < max(g.values()) - MAX_SCORE_LOSS:
            return "", 0.0
    text = ""
    for g in glyphs[:-2]:
        if g is None:
            text += "."
            continue
        digit = max(DIGITS, key=g.get)
        if g[digit] < max(g.values()) - MAX_SCORE_LOSS:
            return "", 0.0
        text += digit
        worst = min(worst, g[digit])
    if text.count(".") > 1 or text.startswith(".") or text.endswith("."):
        return "", 0.0
    return text + " " + best_unit, float(worst)


def _crop(b: _Blob, labels: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """The ink of blob ``b`` (its components only), cropped to its rows with ink."""
    crop = strength[b.y0 : b.y1, b.x0 : b.x1] * np.isin(labels[b.y0 : b.y1, b.x0 : b.x1], b.ids)
    rows = np.nonzero(crop.max(axis=1) > 0.35)[0]
    return crop[rows.min() : rows.max() + 1] if rows.size else crop


def _glyphs_of(b: _Blob, labels: np.ndarray, strength: np.ndarray, digit_h: int) -> list[dict[str, float]]:
    """Scores of the glyph(s) in one blob. Glyphs that touch (serifs, small or narrow fonts) are
    split at faint columns, recursively, when every part matches better than the whole."""
    return _split_glyphs(_crop(b, labels, strength), digit_h, depth=3)[0]


def _trim_rows(crop: np.ndarray) -> np.ndarray | None:
    rows = np.nonzero(crop.max(axis=1) > 0.35)[0]
    cols = np.nonzero(crop.max(axis=0) > 0.35)[0]
    if rows.size == 0:
        return None
    return crop[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _split_glyphs(crop: np.ndarray, digit_h: int, depth: int) -> tuple[list[dict[str, float]], float]:
    """(glyph scores, worst best-score) of the best segmentation of ``crop`` into glyphs."""
    whole = glyph_scores(crop, crop.shape[0] / digit_h)
    best: tuple[list[dict[str, float]], float] = ([whole], max(whole.values()))
    h, w = crop.shape
    if depth == 0 or w < 0.75 * h or w < 6:
        return best
    ink = crop.sum(axis=0)
    lo, hi = max(2, int(0.15 * w)), min(w - 2, int(0.85 * w) + 1)
    if hi <= lo:
        return best
    for cut in sorted(range(lo, hi), key=lambda c: ink[c])[:3]:
        left, right = _trim_rows(crop[:, :cut]), _trim_rows(crop[:, cut:])
        if left is None or right is None:
            continue
        lg, ls = _split_glyphs(left, digit_h, depth - 1)
        rg, rs = _split_glyphs(right, digit_h, depth - 1)
        if min(ls, rs) > best[1] + 0.05:
            best = (lg + rg, min(ls, rs))
    return best


def _group_run(blobs: list[_Blob], seed: _Blob, max_gap: float) -> list[_Blob]:
    """The glyphs on ``seed``'s line joined to it by gaps of at most ``max_gap``."""
    line = [
        b for b in blobs if min(b.y1, seed.y1) - max(b.y0, seed.y0) >= 0.3 * min(b.h, seed.h) or b is seed
    ]
    line.sort(key=lambda b: b.x0)
    i = line.index(seed)
    lo = hi = i
    while lo > 0 and line[lo].x0 - line[lo - 1].x1 <= max_gap:
        lo -= 1
    while hi < len(line) - 1 and line[hi + 1].x0 - line[hi].x1 <= max_gap:
        hi += 1
    return line[lo : hi + 1]


def parse_label(text: str) -> tuple[float, str] | None:
    """``(value, canonical unit)`` of a label such as ``200nm`` or ``0,5µm``; None if it is not one."""
    m = _LABEL.match(text.replace(" ", "").replace("μ", "µ"))
    if not m:
        return None
    return float(m.group(1).replace(",", ".")), UNITS[m.group(2)][0]


def read_scale_bar(image: np.ndarray, path: str | Path | None = None) -> ScaleBar:
    """Find the data bar, its scale bar and label, and return the pixel size.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` gray (or RGB) micrograph with its data bar.
    path : path, optional
        Names the image in errors.

    Raises
    ------
    ScaleBarError
        No band, no bar, no readable label, or a label read with low confidence.
    """
    gray = _to_gray255(image)
    bands = _bands(gray)
    if not bands:
        raise ScaleBarError(
            "--pixel-size auto: no data bar (a flat band at the bottom or top edge) found; give --pixel-size",
            path,
        )
    problems, found = [], []
    for band in bands:
        try:
            found.append(_read_band(gray, band))
        except ScaleBarError as exc:
            problems.append(exc.message)
    if not found:
        raise ScaleBarError(f"--pixel-size auto: {problems[0]}; give --pixel-size", path)
    best = max(found, key=lambda s: s.confidence)
    if best.confidence < MIN_CONFIDENCE:
        raise ScaleBarError(
            f"--pixel-size auto: scale bar label read as '{best.label}' with confidence "
            f"{best.confidence:.2f} (< {MIN_CONFIDENCE}); give --pixel-size",
            path,
        )
    return best


def _read_band(gray: np.ndarray, band: tuple[int, int]) -> ScaleBar:
    """The scale bar in one band: its bar (the longest straight horizontal line) and the label
    nearest to it (see the module doc); :class:`ScaleBarError` when either is missing."""
    from scipy import ndimage

    y0, y1 = band
    sub = gray[y0:y1]
    flat, mode = _flat_rows(sub)
    background = float(np.median(mode[flat >= FLAT_ROW_FRACTION]))
    diff = np.abs(sub - background)
    contrast = float(np.percentile(diff[diff > 20], 90)) if (diff > 20).any() else 0.0
    if contrast < 40:
        raise ScaleBarError("the data bar holds no marks (no scale bar)")
    strength = np.clip(diff / contrast, 0, 1)
    labels, _ = ndimage.label(strength > 0.35, structure=np.ones((3, 3)))
    boxes = ndimage.find_objects(labels)
    bar, bar_len = None, 0
    blobs = []
    for i, sl in enumerate(boxes, start=1):
        if sl is None:
            continue
        ys, xs = sl
        blob = _Blob(xs.start, ys.start, xs.stop, ys.stop, [i])
        # end ticks make a bar's box taller than its line: the line's own thickness is checked below
        if blob.w >= MIN_BAR_PX and blob.w >= 2 * blob.h:
            run, thick = _bar_candidate(labels[sl] == i)
            if run >= 0.9 * blob.w and run >= 4 * thick and run > bar_len:
                if bar is not None:
                    blobs.append(bar)
                bar, bar_len = blob, run
                continue
        blobs.append(blob)
    if bar is None:
        raise ScaleBarError("no scale bar (a straight horizontal line) in the data bar")
    glyphs = _merge_glyphs(blobs)
    tall = max((b.h for b in glyphs), default=0)
    text_h = float(np.median([b.h for b in glyphs if b.h >= 0.4 * tall])) if glyphs else 0.0
    candidates = []
    for b in glyphs:
        beside = min(b.y1, bar.y1 + text_h) - max(b.y0, bar.y0 - text_h) > 0
        if b.x0 >= bar.x1 and beside:
            candidates.append((b.x0 - bar.x1, b, "right"))
        elif b.x1 <= bar.x0 and beside:
            candidates.append((bar.x0 - b.x1, b, "left"))
        elif b.x1 > bar.x0 and b.x0 < bar.x1:
            gap = bar.y0 - b.y1 if b.y1 <= bar.y0 else b.y0 - bar.y1
            if gap >= 0:
                candidates.append((gap, b, "above" if b.y1 <= bar.y0 else "below"))
    reading = None
    seen = set()
    for gap, seed, place in sorted(candidates, key=lambda c: c[0]):
        if gap > 3 * max(seed.h, 1):
            continue
        line = _group_run(glyphs, seed, max_gap=1.6 * text_h)
        i = line.index(seed)
        line_h = max(g.h for g in line)
        # the longest stretch of the line through the seed that reads NUMBER UNIT
        # (other text on the line, such as the tool settings, is left out)
        spans = sorted(
            ((a, b) for a in range(i + 1) for b in range(i + 1, len(line) + 1)), key=lambda ab: ab[0] - ab[1]
        )
        for a, b in spans:
            run = line[a:b]
            key = tuple(id(g) for g in run)
            if key in seen:
                continue
            # a label is a whole word: a glyph closer than a space before or after it belongs to it
            if (a > 0 and run[0].x0 - line[a - 1].x1 < WORD_GAP * line_h) or (
                b < len(line) and line[b].x0 - run[-1].x1 < WORD_GAP * line_h
            ):
                continue
            seen.add(key)
            if place in ("above", "below") and not bar.x0 <= (run[0].x0 + run[-1].x1) / 2 <= bar.x1:
                continue
            text, score = _read_run(run, labels, strength)
            parsed = parse_label(text)
            if parsed is not None:
                reading = (text, score, parsed)
                break
        if reading:
            break
    if reading is None:
        raise ScaleBarError("found a scale bar but no label reading NUMBER UNIT (nm, um, µm, mm) beside it")
    text, score, (value, unit) = reading
    bar_score = min(1.0, bar_len / (4 * MIN_BAR_PX))
    return ScaleBar(
        pixel_size=value / bar_len,
        unit=unit,
        value=value,
        label=text,
        bar_px=int(bar_len),
        confidence=float(max(0.0, min(score, bar_score))),
        band_rows=(int(y0), int(y1)),
        bar_box=(int(bar.x0), int(y0 + bar.y0), int(bar.x1), int(y0 + bar.y1)),
    )


# --------------------------------------------------------------------------- leaving the band out


def image_rows(shape: tuple[int, ...], band: tuple[int, int]) -> slice:
    """The rows of an image outside its data bar (the bar lies along the top or bottom edge)."""
    h = shape[0]
    start, stop = band
    return slice(stop, h) if start == 0 else slice(0, start)


def without_band(labels: np.ndarray, band: tuple[int, int]) -> np.ndarray:
    """``labels`` with every particle that reaches into the data bar removed (set to 0)."""
    labels = np.array(labels, copy=True)
    start, stop = band
    inside = np.unique(labels[start:stop])
    labels[np.isin(labels, inside[inside > 0])] = 0
    return labels
