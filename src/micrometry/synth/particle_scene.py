"""One synthetic suspension image: scene parameters, particle placement, rendering and its exact truth.

A scene is a list of particles (:mod:`.particle_shapes` outlines, placed at
random, some against earlier ones so they touch or overlap, some cut by the
image border) imaged in one mode (:mod:`.particle_optics`). Later particles lie
on top: the annotated mask of a particle is its *visible* part (one pixel
belongs to one particle), as far as it lies in the frame.

Ground truth per particle (whole, unoccluded shape, measured analytically on
its outline polygon, ImageJ column names) goes to the descriptor rows; the
visible masks go to COCO annotations (polygons; RLE for the rare visible part
with a hole).

Every knob is a field of :class:`PopulationParams`, :class:`OpticsParams`,
:class:`DistractorParams` or :class:`ImagingParams`, gathered in
:class:`SuspensionParams`. The same seed gives the same images, byte for byte;
each image has its own seed derived from (seed, split, index), so image ``k``
of a split does not depend on how many images are generated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage as ndi

from micrometry.io.coco import DEFAULT_CATEGORY, crop_to_rle, polygons_from_mask
from micrometry.synth.particle_optics import (
    SIXTEEN_BIT_MODES,
    DistractorParams,
    ImagingParams,
    OpticsParams,
    Particle,
    add_noise,
    check_mode,
    expected_image,
    mode_optics,
)
from micrometry.synth.particle_shapes import (
    PopulationParams,
    polygon_area,
    polygon_descriptors,
    sample_diameters,
    unit_outline,
)


@dataclass
class SuspensionParams:
    """Everything that defines a synthetic suspension image.

    ``modes`` is the imaging mode mix (:data:`MODES`): image ``k`` of a split
    is imaged in ``modes[k % len(modes)]``.
    """

    height: int = 1024
    width: int = 1280
    population: PopulationParams = field(default_factory=PopulationParams)
    optics: OpticsParams = field(default_factory=OpticsParams)
    distractors: DistractorParams = field(default_factory=DistractorParams)
    imaging: ImagingParams = field(default_factory=ImagingParams)
    modes: tuple[str, ...] = ("brightfield",)

    def mode_of(self, index: int) -> str:
        """The imaging mode of image ``index`` of a split."""
        return self.modes[index % len(self.modes)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SuspensionParams:
        """Parameters from a (possibly partial) nested dictionary, as ``to_dict`` writes it.

        Raises
        ------
        ValueError
            An unknown key (the message names it).
        """
        groups = {
            "population": PopulationParams,
            "optics": OpticsParams,
            "distractors": DistractorParams,
            "imaging": ImagingParams,
        }
        kwargs = {}
        for key, value in data.items():
            if key in groups:
                if not isinstance(value, dict):
                    raise ValueError(f"{key!r} must be an object of parameters")
                known = {f.name for f in dataclasses.fields(groups[key])}
                unknown = sorted(set(value) - known)
                if unknown:
                    raise ValueError(
                        f"unknown {key} parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
                    )
                kwargs[key] = groups[key](
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                )
            elif key in ("height", "width"):
                kwargs[key] = int(value)
            elif key == "modes":
                modes = [value] if isinstance(value, str) else list(value)
                if not modes:
                    raise ValueError("'modes' must name at least one imaging mode")
                kwargs[key] = tuple(check_mode(str(m)) for m in modes)
            else:
                raise ValueError(
                    f"unknown parameter group {key!r}; known: height, width, modes, {', '.join(groups)}"
                )
        return cls(**kwargs)


def sample_sizes(pop: PopulationParams, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The area-equivalent diameters of one image's particles (their number follows from the density).

    Without ``pop.coverage`` the count is drawn from ``count_range`` (scaled by
    the frame area); with it, particles are added until their summed area
    reaches ``coverage`` of the frame.
    """
    if pop.coverage is None:
        lo, hi = pop.count_range
        if hi <= 0:  # texture only: no particles at all
            return np.zeros(0)
        n = max(1, int(round(rng.integers(lo, hi + 1) * (h * w) / (1024 * 1280))))
        return sample_diameters(pop, n, rng)
    target = pop.coverage * h * w
    probe = sample_diameters(pop, 256, rng)
    expected = target / float(np.mean(np.pi * probe**2 / 4))
    d = np.concatenate([probe, sample_diameters(pop, int(1.5 * expected) + 16, rng)])
    n = int(np.searchsorted(np.cumsum(np.pi * d**2 / 4), target)) + 1
    return d[: max(1, min(n, d.size))]


def _place_apart(
    pts: np.ndarray,
    d: float,
    placed: list[Particle],
    centres: list[tuple[float, float, float]],
    pop: PopulationParams,
    h: int,
    w: int,
    rng: np.random.Generator,
    tries: int = 10,
) -> tuple[float, float]:
    """A centre for outline ``pts`` (centred at 0) that keeps it clear of the particles placed so far.

    A clustered particle is set against its anchor at the gap measured between
    the two outlines along the line of centres (so elongated shapes touch
    rather than overlap); any placement whose equivalent circle cuts another
    one's is redrawn, up to ``tries`` times (the last draw is kept).
    """
    xy = np.array([c[:2] for c in centres]).reshape(-1, 2)
    radii = np.array([c[2] for c in centres])
    for _ in range(tries):
        anchor = -1
        if centres and rng.random() < pop.cluster_fraction:
            anchor = int(rng.integers(len(centres)))
            direction = rng.uniform(0, 2 * np.pi)
            u = np.array([np.cos(direction), np.sin(direction)])
            rel = placed[anchor].outline - xy[anchor]
            reach = float((rel @ u).max()) + float((-(pts @ u)).max())
            cx, cy = xy[anchor] + reach * rng.uniform(*pop.cluster_gap_range) * u
        else:
            margin = pop.border_margin * d
            cx, cy = rng.uniform(-margin, w + margin), rng.uniform(-margin, h + margin)
        clear = np.hypot(xy[:, 0] - cx, xy[:, 1] - cy) >= 0.95 * (radii + d / 2)
        if anchor >= 0:
            clear[anchor] = True
        if clear.all():
            break
    return float(cx), float(cy)


def sample_particles(
    params: SuspensionParams, rng: np.random.Generator, optics: OpticsParams | None = None
) -> list[Particle]:
    """Sizes, shapes, positions (some clustered), depths and optical properties.

    ``optics`` (default ``params.optics``) is the imaging mode's optics
    (:func:`mode_optics`), which sets the particles' contrast ranges.
    """
    pop, opt = params.population, optics or params.optics
    h, w = params.height, params.width
    diameters = sample_sizes(pop, h, w, rng)
    n = len(diameters)
    kinds = list(pop.shape_weights)
    weights = np.array([pop.shape_weights[k] for k in kinds], dtype=np.float64)
    kind_idx = rng.choice(len(kinds), size=n, p=weights / weights.sum())
    particles: list[Particle] = []
    centres: list[tuple[float, float, float]] = []  # x, y, radius
    for i in range(n):
        kind = kinds[kind_idx[i]]
        d = diameters[i]
        if kind == "rod":
            aspect = rng.uniform(*pop.rod_aspect_range)
        else:
            aspect = max(1.0, float(np.exp(rng.normal(np.log(pop.aspect_median), pop.aspect_sigma))))
        pts = unit_outline(kind, aspect, pop, rng)
        pts *= np.sqrt((np.pi * d * d / 4) / polygon_area(pts))
        angle = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = pts @ rot.T
        if pop.keep_apart:
            cx, cy = _place_apart(pts, d, particles, centres, pop, h, w, rng)
        elif centres and rng.random() < pop.cluster_fraction:
            px, py, pr = centres[int(rng.integers(len(centres)))]
            direction = rng.uniform(0, 2 * np.pi)
            dist = (pr + d / 2) * rng.uniform(*pop.cluster_gap_range)
            cx, cy = px + dist * np.cos(direction), py + dist * np.sin(direction)
        else:
            margin = pop.border_margin * d
            cx, cy = rng.uniform(-margin, w + margin), rng.uniform(-margin, h + margin)
        centres.append((cx, cy, d / 2))
        z = rng.uniform(-1, 1)
        transparent = bool(rng.random() < pop.transparent_fraction)
        particles.append(
            Particle(
                kind=kind,
                outline=pts + np.array([cx, cy]),
                transparent=transparent,
                defocus_sigma=opt.defocus_max_sigma_px * abs(z) ** opt.defocus_power,
                z=z,
                density=rng.uniform(
                    *(opt.transparent_gain_range if transparent else opt.absorbing_density_range)
                ),
                rim_depth=rng.uniform(*opt.rim_depth_range),
                halo=rng.uniform(*opt.halo_amplitude_range),
            )
        )
    return particles


def visible_parts(owner: np.ndarray, n: int, pop: PopulationParams) -> list[dict | None]:
    """Per particle: its visible mask crop (small fragments removed), or None when not annotated.

    ``owner`` is cleaned in place: pixels of dropped parts become 0, so it is
    the exact label image of the annotations.
    """
    parts: list[dict | None] = []
    slices = ndi.find_objects(owner, max_label=n)
    for pid, sl in enumerate(slices, start=1):
        if sl is None:
            parts.append(None)
            continue
        crop = owner[sl] == pid
        ncc, cc, stats, _ = cv2.connectedComponentsWithStats(crop.astype(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < pop.min_fragment_area)
        small = small[small > 0]
        if small.size:
            drop = np.isin(cc, small)
            owner[sl][drop] = 0
            crop &= ~drop
        area = int(crop.sum())
        if area < pop.min_visible_area:
            owner[sl][crop] = 0
            parts.append(None)
            continue
        parts.append({"crop": crop, "y0": sl[0].start, "x0": sl[1].start, "area": area})
    return parts


def annotation_for(part: dict, h: int, w: int) -> tuple[list | dict, list[float]]:
    """COCO segmentation (polygons; RLE when the visible part has a hole) and bbox of a visible part."""
    crop, x0, y0 = part["crop"], part["x0"], part["y0"]
    ys, xs = np.nonzero(crop)
    bbox = [
        float(x0 + xs.min()),
        float(y0 + ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]
    if (ndi.binary_fill_holes(crop) & ~crop).any():
        return crop_to_rle(crop, y0, x0, h, w), bbox
    polygons = polygons_from_mask(crop)
    shifted = []
    for poly in polygons:
        xy = np.asarray(poly).reshape(-1, 2) + [x0, y0]
        shifted.append([round(float(v), 2) for v in xy.ravel()])
    return shifted, bbox


@dataclass
class RenderedImage:
    """One synthetic image with its truth."""

    image: np.ndarray  # (H, W) uint8 (uint16 in SIXTEEN_BIT_MODES)
    labels: np.ndarray  # (H, W) int32, 0 background, i = particle i (visible, annotated part)
    annotations: list[dict]  # COCO annotations without ids / image ids
    particles: list[dict]  # true descriptors per particle (whole shape)
    mode: str = "brightfield"  # imaging mode (MODES)


def render_image(
    params: SuspensionParams, rng: np.random.Generator, mode: str | None = None
) -> RenderedImage:
    """Render one image and its ground truth.

    Parameters
    ----------
    params : SuspensionParams
    rng : numpy.random.Generator
        The image's generator (:func:`image_rng`).
    mode : str, optional
        Imaging mode (:data:`MODES`); default ``params.modes[0]``.
    """
    h, w = params.height, params.width
    mode = check_mode(mode or params.modes[0])
    opt = mode_optics(params.optics, params.imaging, mode)
    particles = sample_particles(params, rng, opt)
    expected, owner = expected_image(
        particles, h, w, opt, params.distractors, params.imaging, mode, rng, params.population.occlusion
    )
    image = add_noise(expected, opt, rng, bits=16 if mode in SIXTEEN_BIT_MODES else 8)

    parts = visible_parts(owner, len(particles), params.population)
    annotations, rows = [], []
    relabel = np.zeros(len(particles) + 1, np.int32)
    for pid, (p, part) in enumerate(zip(particles, parts, strict=False), start=1):
        row = {
            "particle": pid,
            "kind": p.kind,
            "transparent": p.transparent,
            "defocus_sigma": round(p.defocus_sigma, 3),
            **polygon_descriptors(p.outline),
        }
        xy = p.outline
        row["border_cut"] = bool(
            (xy[:, 0] < 0).any() or (xy[:, 1] < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any()
        )
        row["visible_area"] = part["area"] if part else 0
        row["visible_fraction"] = round(row["visible_area"] / row["Area"], 4)
        row["annotated"] = part is not None
        if part is not None:
            segmentation, bbox = annotation_for(part, h, w)
            annotations.append(
                {
                    "category_id": DEFAULT_CATEGORY["id"],
                    "segmentation": segmentation,
                    "area": float(part["area"]),
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
            relabel[pid] = len(annotations)
            row["label"] = len(annotations)
        else:
            row["label"] = 0
        rows.append(row)
    return RenderedImage(image, relabel[owner], annotations, rows, mode)


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of how many images are made."""
    split_key = int.from_bytes(split.encode("utf-8"), "little") % (2**32)
    return np.random.default_rng(np.random.SeedSequence([seed, split_key, index]))
