"""Instance fusion, test-time augmentation and ensembles on small label images the tests draw."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from micrometry.errors import InputError
from micrometry.particles.ensemble import EnsembleSegmenter, parse_members
from micrometry.particles.fusion import fuse_segmentations, instances_from_labels
from micrometry.particles.segmenter import Instances
from micrometry.particles.tta import FLIPS, TTAPlan, TTASegmenter, tta_plan


def as_set(labels: np.ndarray, scores: np.ndarray) -> set[tuple[bytes, tuple, float]]:
    """Instances independent of their ids: (mask bytes, box, score)."""
    return {
        (m.mask.tobytes(), (m.top, m.left, *m.mask.shape), round(m.score, 6))
        for m in instances_from_labels(labels, scores)
    }


def scene(rng: np.random.Generator, shape=(80, 96), n=12) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping random discs painted in order (later ones hide earlier ones), random scores."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        r = rng.uniform(3, 9)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = i
    present = np.unique(labels[labels > 0])
    relabel = np.zeros(n + 1, np.int32)
    relabel[present] = np.arange(1, len(present) + 1)
    return relabel[labels], rng.random(len(present)).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_fusing_identical_runs_gives_the_run(seed):
    labels, scores = scene(np.random.default_rng(seed))
    for weights in (None, [1.0, 3.0]):
        fused = fuse_segmentations([(labels, scores), (labels.copy(), scores.copy())], weights)
        assert as_set(*fused) == as_set(labels, scores)
    assert as_set(*fuse_segmentations([(labels, scores)])) == as_set(labels, scores)


def test_particle_found_by_one_member_keeps_its_mask_at_a_lower_score():
    a = np.zeros((20, 20), np.int32)
    a[2:8, 2:8] = 1
    b = a.copy()
    b[12:18, 12:18] = 2  # only member b sees this one
    labels, scores = fuse_segmentations([(a, np.array([0.8])), (b, np.array([0.6, 0.9]))])
    found = {m.box: m.score for m in instances_from_labels(labels, scores)}
    assert found == {(2, 2, 8, 8): pytest.approx(0.7), (12, 12, 18, 18): pytest.approx(0.45)}


def test_mask_vote_by_weight():
    a = np.zeros((20, 20), np.int32)
    a[5:15, 5:15] = 1
    b = np.zeros((20, 20), np.int32)
    b[5:15, 7:15] = 1  # the same particle, two columns narrower
    one = np.array([1.0])
    wide = fuse_segmentations([(a, one), (b, one), (a, one)])[0]
    narrow = fuse_segmentations([(a, one), (b, one)], weights=[1.0, 3.0], vote=0.6)[0]
    assert (wide > 0).sum() == 100 and (narrow > 0).sum() == 80
    # A zero-weight member changes nothing.
    assert as_set(*fuse_segmentations([(a, one), (b, one)], weights=[1.0, 0.0])) == as_set(a, one)


def test_a_tie_goes_the_leaders_way():
    a = np.zeros((20, 20), np.int32)
    a[5:15, 5:15] = 1
    b = np.zeros((20, 20), np.int32)
    b[5:15, 7:17] = 1  # the same particle, shifted two columns
    for best, other in (
        ((a, np.array([0.9])), (b, np.array([0.8]))),
        ((b, np.array([0.9])), (a, np.array([0.8]))),
    ):
        labels, scores = fuse_segmentations([best, other])
        assert np.array_equal(labels > 0, best[0] > 0) and scores[0] == pytest.approx(0.85)


def test_fusion_refuses_bad_input():
    with pytest.raises(ValueError):
        fuse_segmentations([])
    with pytest.raises(ValueError):
        fuse_segmentations([(np.zeros((4, 4), np.int32), np.zeros(0))] * 2, weights=[1.0])


class ShiftedThreshold:
    """A deliberately biased segmenter: bright blobs, every mask shifted one pixel right and down."""

    name = "shifted"

    def segment(self, image: np.ndarray) -> Instances:
        from scipy import ndimage

        labels, n = ndimage.label(image > 128)
        labels = np.roll(labels, (1, 1), axis=(0, 1))
        return Instances(labels=labels, scores=np.linspace(0.5, 0.9, n).astype(np.float32))


def symmetric_image() -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    image = np.zeros((64, 64), np.uint8)
    for cy, cx, r in [(13, 13, 8), (32, 32, 10)]:  # big enough for IoU > 0.5 between shifted passes
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 255
    image = np.maximum(image, image[::-1])
    return np.maximum(image, image[:, ::-1])  # symmetric under both flips


def test_flip_tta_of_a_symmetric_image_is_symmetric():
    image = symmetric_image()
    plain = ShiftedThreshold().segment(image).labels
    assert not np.array_equal(plain > 0, (plain > 0)[:, ::-1])  # the bias breaks the symmetry
    found = TTASegmenter(ShiftedThreshold(), TTAPlan(flips=FLIPS)).segment(image)
    for axes in FLIPS[1:]:
        flipped = np.flip(found.labels, axes)
        assert as_set(flipped, found.scores) == as_set(found.labels, found.scores)
    assert found.count == ndimage.label(image > 128)[1] == 5


def test_scale_tta_maps_back_to_the_image():
    image = symmetric_image()
    found = TTASegmenter(ShiftedThreshold(), TTAPlan(scales=(0.5, 1.0, 2.0))).segment(image)
    assert found.labels.shape == image.shape and found.count == ndimage.label(image > 128)[1]


def test_map_flips_are_delegated_to_dense_models():
    class Dense(ShiftedThreshold):
        supports_map_flips = True
        tta = False

    base = Dense()
    tta = TTASegmenter(base, tta_plan(True, None))
    assert base.tta and tta.describe()["tta"]["flips_by"] == "map averaging"


def test_tta_options():
    assert tta_plan(False, None) is None and tta_plan(False, "1") is None
    plan = tta_plan(True, "0.8,1,1.25")
    assert plan.passes == 12 and plan.scales == (0.8, 1.0, 1.25)
    assert tta_plan(False, [0.5]).passes == 1
    for bad in ("9", "a,b", ""):
        with pytest.raises(InputError):
            tta_plan(True, bad)


def test_ensemble_of_identical_members_is_the_member_and_is_described():
    image = symmetric_image()
    one = ShiftedThreshold().segment(image)
    ens = EnsembleSegmenter([ShiftedThreshold(), ShiftedThreshold()], [1.0, 2.0], ["runA", "runB"])
    found = ens.segment(image)
    assert as_set(found.labels, found.scores) == as_set(one.labels, one.scores)
    info = ens.describe()
    assert [(m["model"], m["weight"]) for m in info["members"]] == [("runA", 1.0), ("runB", 2.0)]


def test_member_spec_parsing():
    assert parse_members("a,b:2.5") == [("a", 1.0), ("b", 2.5)]
    assert parse_members("C:/runs/x,b") == [("C:/runs/x", 1.0), ("b", 1.0)]
    assert parse_members(["runs/a,b", "c:2"]) == [("runs/a,b", 1.0), ("c", 2.0)]  # a list: one member each
    for bad in ("a,,b", "a:-1,b", "a:0,b:0", "a:inf,b", "a:nan,b", "a", ["a"]):
        with pytest.raises(InputError):
            parse_members(bad)
