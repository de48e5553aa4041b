"""The classical baseline: flatten, threshold, fill, clean, split by distance-transform watershed.

Steps, each controlled by one field of :class:`WatershedParams`:

1. **Background flattening.** The illumination of a brightfield image varies
   slowly (vignetting, uneven lamp); a median over a window much larger than a
   particle estimates it (computed on a downsampled image for speed). The
   *contrast* ``|I - B| / B`` then treats dark (absorbing) and bright
   (transparent, haloed) particles alike.
2. **Threshold** of the smoothed contrast: Otsu's, but never below
   ``noise_k`` robust standard deviations of the background noise.
3. **Hole filling**: transparent particles only show their rim.
4. **Cleaning**: a small opening removes specks and thin fibres, then objects
   smaller than ``min_area`` pixels are dropped.
5. **Splitting touching particles**: markers are the h-maxima of the distance
   transform (a neck narrower than ``marker_h`` pixels below both centres does
   not split), then a watershed on the negated distance.
6. **Confidence** per object: its mean contrast relative to the threshold
   (saturating) times its solidity (ragged, non-convex shapes are often
   merges or debris).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from micrometry.particles.segmenter import Instances, SegmenterBase


@dataclass
class WatershedParams:
    """Parameters of the watershed baseline (pixels unless stated).

    Attributes
    ----------
    background_size : int
        Width of the median window that estimates the background; must be
        well above the largest particle (default 151 px for particles up to ~110 px;
        capped at half the image's shorter side).
    background_downsample : int
        The background is estimated on an image this many times smaller (speed;
        reduced so that the small image keeps at least 64 px on its short side).
    smooth_sigma : float
        Gaussian smoothing of the contrast image before thresholding (noise).
    threshold : float or None
        Fixed contrast threshold (fraction of background, e.g. 0.08); None:
        automatic (Otsu, floored at ``noise_k`` noise standard deviations).
    noise_k : float
        Floor of the automatic threshold in robust noise standard deviations.
    fill_holes : bool
        Fill holes in the foreground (transparent particles show only a rim).
    opening_radius : int
        Radius of the binary opening that removes specks and thin fibres (0: none).
    min_area : int
        Objects with fewer pixels are dropped.
    marker_h : float
        Height (px of distance) a distance-map peak must rise above the saddle
        to its neighbour to seed its own particle; larger merges more.
    marker_smooth_sigma : float
        Gaussian smoothing of the distance map before finding markers.
    min_score : float
        Objects with a lower confidence are dropped.
    """

    background_size: int = 151
    background_downsample: int = 16
    smooth_sigma: float = 1.0
    threshold: float | None = None
    noise_k: float = 4.0
    fill_holes: bool = True
    opening_radius: int = 1
    min_area: int = 40
    marker_h: float = 2.0
    marker_smooth_sigma: float = 1.0
    min_score: float = 0.0


def estimate_background(image: np.ndarray, size: int, downsample: int) -> np.ndarray:
    """Slowly varying illumination: a median over ``size`` px, computed ``downsample`` times smaller.

    The window is capped at half the image's shorter side: on small crops a
    larger window would average the illumination gradient away.
    """
    h, w = image.shape
    size = min(size, min(h, w) // 2)
    downsample = max(1, min(downsample, min(h, w) // 64))  # keep >= 64 px on the short side
    small = cv2.resize(
        image.astype(np.float32),
        (max(1, w // downsample), max(1, h // downsample)),
        interpolation=cv2.INTER_AREA,
    )
    k = max(3, int(round(size / downsample)) | 1)
    small = ndi.median_filter(small, size=k, mode="reflect")
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def contrast_image(image: np.ndarray, params: WatershedParams) -> np.ndarray:
    """Signed contrast ``(I - B) / B`` against the flattened background, smoothed."""
    img = image.astype(np.float32)
    background = estimate_background(img, params.background_size, params.background_downsample)
    signed = (img - background) / np.maximum(background, 1.0)
    if params.smooth_sigma > 0:
        signed = cv2.GaussianBlur(signed, (0, 0), params.smooth_sigma)
    return signed


def foreground_mask(contrast: np.ndarray, params: WatershedParams) -> tuple[np.ndarray, float]:
    """Threshold ``|contrast|``, fill holes, open, drop small objects; returns (mask, threshold)."""
    magnitude = np.abs(contrast)
    if params.threshold is not None:
        threshold = float(params.threshold)
    else:
        # Robust noise level: median absolute deviation of the signed contrast (particles are outliers).
        noise = 1.4826 * float(np.median(np.abs(contrast - np.median(contrast))))
        threshold = max(float(threshold_otsu(magnitude[::2, ::2])), params.noise_k * noise)
    mask = magnitude > threshold
    if params.fill_holes:
        mask = ndi.binary_fill_holes(mask)
    if params.opening_radius > 0:
        r = params.opening_radius
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)
    n, cc, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= params.min_area
    keep[0] = False
    return keep[cc], threshold


def split_touching(mask: np.ndarray, params: WatershedParams) -> np.ndarray:
    """Label image of ``mask`` with touching particles split by a distance-transform watershed."""
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    if params.marker_smooth_sigma > 0:
        distance = cv2.GaussianBlur(distance, (0, 0), params.marker_smooth_sigma)
    markers = np.zeros(mask.shape, np.int32)
    components, n = ndi.label(mask)
    next_id = 1
    # h-maxima per component crop: grayscale reconstruction sorts every pixel it is given,
    # and most of the frame is background
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is None:
            continue
        inside = components[box] == index
        crop = np.where(inside, distance[box], 0.0)
        peaks = (
            h_maxima(crop, params.marker_h) if params.marker_h > 0 else crop == ndi.maximum_filter(crop, 3)
        )
        peak_labels, n_peaks = ndi.label(peaks & inside)
        if n_peaks == 0:  # flat or tiny: the component is one particle
            peak_labels, n_peaks = inside.astype(np.int32), 1
        markers[box][peak_labels > 0] = peak_labels[peak_labels > 0] + next_id - 1
        next_id += n_peaks
    labels = watershed(-distance, markers, mask=mask)
    return labels.astype(np.int32)


def object_scores(labels: np.ndarray, contrast: np.ndarray, threshold: float) -> np.ndarray:
    """Confidence in [0, 1] per label id: saturating mean contrast times solidity."""
    from skimage.measure import regionprops

    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(0, np.float32)
    index = np.arange(1, n + 1)
    mean_contrast = np.asarray(ndi.mean(np.abs(contrast), labels, index))
    strength = 1.0 - np.exp(-mean_contrast / max(threshold, 1e-6))
    solidity = np.ones(n)
    for region in regionprops(labels):
        solidity[region.label - 1] = region.solidity
    return np.clip(strength * solidity, 0, 1).astype(np.float32)


def relabel_sequential(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Keep label ids where ``keep[id - 1]`` and renumber them 1..K in order."""
    lut = np.zeros(len(keep) + 1, np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[labels]


class WatershedSegmenter(SegmenterBase):
    """Distance-transform watershed baseline (see the module docstring)."""

    name = "watershed"

    def __init__(self, params: WatershedParams | None = None):
        self.params = params or WatershedParams()

    def config(self) -> dict:
        return {"model": self.name, **asdict(self.params)}

    def segment(self, image: np.ndarray) -> Instances:
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D gray image, got shape {image.shape}")
        contrast = contrast_image(image, self.params)
        mask, threshold = foreground_mask(contrast, self.params)
        labels = split_touching(mask, self.params)
        scores = object_scores(labels, contrast, threshold)
        sizes = np.bincount(labels.ravel(), minlength=len(scores) + 1)[1:]
        keep = (scores >= self.params.min_score) & (sizes >= self.params.min_area)
        return Instances(relabel_sequential(labels, keep), scores[keep])


def make_watershed(**cfg) -> WatershedSegmenter:
    """Factory: ``cfg`` are :class:`WatershedParams` fields (registered as a model in particles/models/classical.py)."""
    return WatershedSegmenter(WatershedParams(**cfg))
