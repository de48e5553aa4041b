"""The detector's building blocks against straightforward references: NMS, RoIAlign, box coding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from micrometry.particles.models.detection.boxes import BoxCoder, box_iou, clip_boxes, match
from micrometry.particles.models.detection.nms import batched_nms, nms
from micrometry.particles.models.detection.roi_align import level_of_boxes, roi_align


def random_boxes(rng: np.random.Generator, n: int, size: float = 100.0) -> np.ndarray:
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 3, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def iou_reference(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_reference(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Textbook greedy NMS: highest score first (ties by index), drop what overlaps a kept box."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(iou_reference(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


def test_box_iou_matches_reference():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    got = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.array([[iou_reference(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_greedy_reference(seed, threshold):
    rng = np.random.default_rng(seed)
    # Clusters of jittered copies: heavy overlaps at every threshold, long suppression chains.
    boxes = np.repeat(random_boxes(rng, 30, size=60.0), 5, axis=0) + rng.normal(0, 1.5, (150, 4)).astype(
        np.float32
    )
    # Few distinct scores: many ties, which must be broken by index.
    scores = rng.integers(0, 8, 150).astype(np.float32) / 8
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).tolist()
    assert got == nms_reference(boxes, scores, threshold)
    assert 0 < len(got) < 150
    assert nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold, max_keep=5).tolist() == got[:5]


def test_nms_across_blocks_matches_reference():
    # More boxes than one block: suppression across blocks and long chains inside them.
    rng = np.random.default_rng(9)
    boxes = np.repeat(random_boxes(rng, 100, size=200.0), 6, axis=0) + rng.normal(0, 2, (600, 4)).astype(
        np.float32
    )
    scores = rng.random(600).astype(np.float32)
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist()
    assert got == nms_reference(boxes, scores, 0.5)


def test_nms_of_identical_boxes_keeps_the_first_best():
    boxes = torch.tensor([[0, 0, 10, 10]] * 4, dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1])
    assert nms(boxes, scores, 0.5).tolist() == [1]
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0


@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_is_nms_per_group(seed):
    rng = np.random.default_rng(seed)
    n = 200
    boxes = random_boxes(rng, n, size=50.0)
    boxes[: n // 2] -= 20  # some negative coordinates
    scores = rng.random(n).astype(np.float32)
    groups = rng.integers(0, 5, n)  # e.g. (image, class) pairs flattened
    got = batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), 0.5
    ).tolist()
    want = []
    for g in range(5):
        idx = np.nonzero(groups == g)[0]
        want += [int(idx[k]) for k in nms_reference(boxes[idx], scores[idx], 0.5)]
    assert sorted(got) == sorted(want)
    assert list(scores[got]) == sorted(scores[got], reverse=True)


def bilinear_reference(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """torchvision's bilinear_interpolate, written out for one point of a ``(C, H, W)`` map."""
    _, h, w = feature.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * feature[:, y0, x0]
        + (1 - ly) * lx * feature[:, y0, x1]
        + ly * (1 - lx) * feature[:, y1, x0]
        + ly * lx * feature[:, y1, x1]
    )


def roi_align_reference(
    features: np.ndarray, rois: np.ndarray, size: int, scale: float, ratio: int, aligned: bool = True
) -> np.ndarray:
    out = np.zeros((len(rois), features.shape[1], size, size))
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = (x2 - x1) * scale, (y2 - y1) * scale
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / size, rh / size
        for i in range(size):
            for j in range(size):
                acc = 0.0
                for iy in range(ratio):
                    for ix in range(ratio):
                        y = sy + i * bh + (iy + 0.5) * bh / ratio
                        x = sx + j * bw + (ix + 0.5) * bw / ratio
                        acc = acc + bilinear_reference(features[int(b)], y, x)
                out[k, :, i, j] = acc / ratio**2
    return out


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_matches_exact_bilinear_reference(aligned):
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 3, 9, 11)).astype(np.float64)
    rois = [
        [0, 2.0, 3.0, 10.0, 12.0],  # inside
        [1, 0.0, 0.0, 22.0, 18.0],  # the whole image (scale 0.5: exactly the map)
        [0, -6.0, -5.0, 4.0, 3.0],  # beyond the top-left border
        [1, 15.0, 12.0, 30.0, 25.0],  # beyond the bottom-right border
        [0, 19.5, 1.0, 21.7, 2.2],  # tiny, at the right edge
        [1, -3.0, 17.0, 1.0, 19.0],  # partly more than one pixel outside (zeros)
        [0, 5.0, 5.0, 5.0, 5.0],  # degenerate
    ]
    rois = np.array(rois, dtype=np.float64)
    for size, ratio in [(3, 2), (4, 1), (2, 3)]:
        got = roi_align(torch.from_numpy(features), torch.from_numpy(rois), size, 0.5, ratio, aligned).numpy()
        want = roi_align_reference(features, rois, size, 0.5, ratio, aligned)
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_roi_align_of_a_linear_ramp_is_the_bin_centre():
    # On f(y, x) = x (pixel centres at integers after the aligned shift) each bin's mean is its centre.
    ramp = torch.arange(16, dtype=torch.float64).expand(1, 1, 8, 16).clone()
    out = roi_align(ramp, torch.tensor([[0, 4.0, 2.0, 12.0, 6.0]], dtype=torch.float64), 4, 1.0, 2)
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [4.5, 6.5, 8.5, 10.5])


def test_fpn_level_assignment():
    boxes = torch.tensor(
        [[0, 0, 8, 8], [0, 0, 32, 32], [0, 0, 64, 64], [0, 0, 1000, 1000]], dtype=torch.float32
    )
    assert level_of_boxes(boxes, 2, 5, 32.0, 3).tolist() == [2, 3, 4, 5]


def test_box_coding_round_trip_and_identity():
    rng = np.random.default_rng(2)
    ref, target = torch.from_numpy(random_boxes(rng, 50)), torch.from_numpy(random_boxes(rng, 50))
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = coder.encode(target, ref)
    torch.testing.assert_close(coder.decode(deltas, ref), target, atol=1e-3, rtol=1e-5)
    assert torch.allclose(coder.encode(ref, ref), torch.zeros_like(ref), atol=1e-6)
    # A huge predicted scale is clamped instead of overflowing.
    huge = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert torch.isfinite(huge).all()


def test_clip_and_match():
    clipped = clip_boxes(torch.tensor([[-5.0, -2.0, 50.0, 8.0]]), (10, 20))
    assert clipped.tolist() == [[0.0, 0.0, 20.0, 8.0]]
    iou = torch.tensor([[0.9, 0.5, 0.1, 0.2], [0.1, 0.2, 0.25, 0.3]])
    assert match(iou, 0.7, 0.3, False).tolist() == [0, -2, -1, -2]
    # With low-quality matches, gt 1's best prediction (column 3) is matched to it.
    assert match(iou, 0.7, 0.3, True).tolist() == [0, -2, -1, 1]
    assert match(torch.tensor([[0.9, 0.5, 0.1, 0.2], [0.1, 0.2, 0.25, 0.25]]), 0.7, 0.3, True).tolist() == [
        0,
        -2,
        1,
        1,
    ]
    assert match(torch.zeros((0, 3)), 0.7, 0.3, True).tolist() == [-1, -1, -1]
