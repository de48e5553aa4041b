"""Is one image's particle segmentation to be trusted? A verdict from what the segmentation shows.

A model shown an image unlike anything it learned from (a texture with no
particles, a tissue section, a foam) does not answer "nothing here": it
segments the texture into thousands of plausible-looking blobs. The numbers
then look like a result. :func:`assess_reliability` calls a segmentation
*unreliable* when it shows the marks of that failure, each measured against
the image's own particle size so that no rule depends on magnification:

1. **No background left** (*cover*): the objects found cover, or counted at
   their median area would cover, a share *c* of the image. Real particles,
   even crowded or touching, leave background between them; a texture
   segmented as particles tiles the whole field.
2. **Objects the model doubts** (*uncertain fraction*): a share *u* of the
   objects score below :data:`MIN_SCORE`, the confidence at which the model
   itself counts an object as found (with the candidates a model dropped
   below that score before reporting, when its info counts them).

   Either sign alone is enough at its limit, and two weaker signs together
   count as much: the segmentation is unreliable when
   ``(c / MAX_COVER)**2 + (u / MAX_UNCERTAIN)**2 > 1``.
3. **Fragments** (*tiny fraction*): more than :data:`MAX_TINY` of the objects
   are under :data:`TINY_RATIO` of the area-weighted median diameter (the
   diameter of the object holding the median object pixel: unlike the plain
   median, many fragments do not drag it down to their own size), the size
   distribution of a shattered field rather than of a particle population.
4. **Objects too small to measure** (*median diameter*): the objects' median
   area-equivalent diameter is under :data:`MIN_DIAMETER_PX` pixels. At that
   size a half-pixel shift of every outline moves the diameters by 10 % or
   more, and specks, noise and particles look alike: on images with no
   particles at all the model, which enlarges an image until its objects
   meet the size it was trained for, finds dust specks and grain of 4-8 px.

Rules 1-3 are applied only with at least :data:`MIN_OBJECTS` objects (a
handful of objects gives no distribution to judge), rule 4 to any number.
No particles at all is not unreliable: it is the right answer for an empty
field, and ``predict`` already warns about it. The thresholds were set on the
ordinary synthetic imaging modes (never flagged) and on texture-only images
(band-passed noise, TEM-like grain, a reticulated foam, a large cell on a
textured ground, the generator's ``--density none``), see
``docs/particles-models.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: The score at which an object counts as found (the F1@0.5 and count convention).
MIN_SCORE = 0.5
#: Objects (as found, and counted at their median area) may cover at most this share of the image...
MAX_COVER = 0.55
#: ... and at most this share of them may score below MIN_SCORE (both together: see the module docstring).
MAX_UNCERTAIN = 0.5
#: At most this share of the objects may be under TINY_RATIO x the area-weighted median diameter.
MAX_TINY = 0.5
TINY_RATIO = 0.25
#: Fewer objects than this are not judged by the distribution rules (1-3).
MIN_OBJECTS = 20
#: Objects with a median area-equivalent diameter under this many pixels cannot be measured (rule 4).
MIN_DIAMETER_PX = 10.0


@dataclass(frozen=True)
class Reliability:
    """The verdict on one image's segmentation.

    Attributes
    ----------
    reliable : bool
        False when a rule of :func:`assess_reliability` fired.
    reason : str
        Why not (the rules that fired, in words); empty when reliable.
    metrics : dict
        The figures the rules looked at (``objects``, ``coverage``, ``packing``,
        ``uncertain_fraction``, ``evidence`` (rules 1-2 together, above 1 is
        unreliable), ``tiny_fraction``, ``median_diameter_px``).
    """

    reliable: bool
    reason: str = ""
    metrics: dict = field(default_factory=dict)

    def record(self) -> dict:
        """What ``prediction.json`` stores per image: ``reliable``, ``reason`` and ``reliability`` (the metrics)."""
        return {"reliable": self.reliable, "reason": self.reason, "reliability": dict(self.metrics)}


def assess_reliability(
    labels: np.ndarray, scores: np.ndarray | None = None, info: dict | None = None
) -> Reliability:
    """Judge one image's segmentation (see the module docstring for the rules).

    Parameters
    ----------
    labels : ndarray
        ``(H, W)`` label image, 0 background, 1..N objects.
    scores : ndarray, optional
        ``(N,)`` confidences (``scores[i]`` for label ``i + 1``); without them
        the uncertainty rule is skipped.
    info : dict, optional
        The segmenter's info; a model that drops objects scoring below
        :data:`MIN_SCORE` before reporting them (the dense models) says there
        how many candidates it had (``candidates``) and dropped
        (``below_score``): those doubted objects count in the uncertain fraction.

    Returns
    -------
    Reliability
    """
    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel().astype(np.int64))[1:]
    areas = areas[areas > 0]
    n = len(areas)
    metrics: dict = {"objects": int(n)}
    if n == 0:
        return Reliability(True, "", metrics)
    diameters = np.sqrt(4.0 * areas / math.pi)
    median = float(np.median(diameters))
    coverage = float(areas.sum()) / labels.size
    packing = n * float(np.median(areas)) / labels.size
    order = np.argsort(areas)
    held = np.cumsum(areas[order])
    area_median = float(diameters[order][np.searchsorted(held, held[-1] / 2)])
    tiny = float(np.mean(diameters < TINY_RATIO * area_median))
    metrics.update(
        median_diameter_px=round(median, 2),
        area_median_diameter_px=round(area_median, 2),
        coverage=round(coverage, 4),
        packing=round(packing, 4),
        tiny_fraction=round(tiny, 4),
    )
    uncertain = 0.0
    doubted, candidates = 0, n
    if scores is not None and len(scores):
        doubted = int(np.sum(np.asarray(scores, dtype=np.float64) < MIN_SCORE))
    info = info or {}
    if info.get("candidates") and "below_score" in info:  # objects the model dropped as doubtful
        doubted += int(info["below_score"])
        candidates = max(int(info["candidates"]), n)
    if scores is not None or "below_score" in info:
        uncertain = doubted / max(candidates, 1)
        metrics["uncertain_fraction"] = round(uncertain, 4)
    cover = max(coverage, packing)
    evidence = (cover / MAX_COVER) ** 2 + (uncertain / MAX_UNCERTAIN) ** 2
    metrics["evidence"] = round(evidence, 4)
    reasons = []
    judged = max(n, candidates) >= MIN_OBJECTS
    if judged and evidence > 1:
        reasons.append(
            f"{n} objects of median diameter {median:.1f} px cover {100 * cover:.0f} % of the image and "
            f"{100 * uncertain:.0f} % of the {candidates} candidates score below {MIN_SCORE:g}: a texture "
            "segmented as particles?"
        )
    if n >= MIN_OBJECTS and tiny > MAX_TINY:
        reasons.append(
            f"{100 * tiny:.0f} % of the objects are under {TINY_RATIO:.2g} x the area-weighted median "
            f"diameter of {area_median:.1f} px: fragments?"
        )
    if median < MIN_DIAMETER_PX:
        reasons.append(
            f"the {n} objects have a median diameter of {median:.1f} px, under {MIN_DIAMETER_PX:g} px: too "
            "small to tell particles from specks and noise or to size them (image at a higher magnification)"
        )
    return Reliability(not reasons, "; ".join(reasons), metrics)
