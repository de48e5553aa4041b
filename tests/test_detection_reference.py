"""The detector's ops against torchvision's compiled ones, and the model on CUDA: where those exist.

This project's CPU torch cannot import torchvision, so here these tests skip;
on a machine where torchvision works (a GPU machine) they compare NMS,
RoIAlign and box coding with the reference implementation and run a training
step and inference of the model on the GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _torchvision_ops():
    try:
        import torchvision.ops as ops

        ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
        return ops
    except Exception:  # missing, or built for another torch (missing operators)
        return None


OPS = _torchvision_ops()
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_torchvision = pytest.mark.skipif(OPS is None, reason="torchvision unusable here")


def random_boxes(rng, n, size=200.0):
    xy = rng.uniform(-10, size, (n, 2))
    wh = rng.uniform(1, size / 4, (n, 2))
    return torch.from_numpy(np.concatenate([xy, xy + wh], 1).astype(np.float32))


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
def test_nms_and_batched_nms_match_torchvision(device):
    from micrometry.particles.models.detection.nms import batched_nms, nms

    rng = np.random.default_rng(0)
    for n, threshold in [(50, 0.3), (500, 0.5), (3000, 0.7)]:
        boxes = random_boxes(rng, n).to(device)
        scores = torch.from_numpy(rng.random(n).astype(np.float32)).to(
            device
        )  # distinct scores: no tie rules
        groups = torch.from_numpy(rng.integers(0, 4, n)).to(device)
        assert nms(boxes, scores, threshold).tolist() == OPS.nms(boxes, scores, threshold).tolist()
        assert (
            batched_nms(boxes, scores, groups, threshold).tolist()
            == OPS.batched_nms(boxes, scores, groups, threshold).tolist()
        )


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_matches_torchvision(device, aligned):
    from micrometry.particles.models.detection.roi_align import roi_align

    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.normal(size=(2, 5, 23, 31)).astype(np.float32)).to(device)
    boxes = random_boxes(rng, 40, size=130.0)  # many beyond the 124x92 image (stride 4)
    rois = torch.cat([torch.from_numpy(rng.integers(0, 2, (40, 1)).astype(np.float32)), boxes], 1).to(device)
    for size, ratio in [(7, 2), (14, 2), (4, 1)]:
        got = roi_align(features, rois, size, 0.25, ratio, aligned)
        want = OPS.roi_align(features, rois, size, 0.25, ratio, aligned)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@needs_torchvision
def test_box_coder_matches_torchvision():
    from torchvision.models.detection._utils import BoxCoder as Reference

    from micrometry.particles.models.detection.boxes import BoxCoder

    rng = np.random.default_rng(2)
    ref, gt = random_boxes(rng, 100), random_boxes(rng, 100)
    weights = (10.0, 10.0, 5.0, 5.0)
    ours, theirs = BoxCoder(weights), Reference(weights)
    torch.testing.assert_close(ours.encode(gt, ref), theirs.encode_single(gt, ref), atol=1e-4, rtol=1e-4)
    deltas = torch.from_numpy(rng.normal(0, 1, (100, 4)).astype(np.float32))
    torch.testing.assert_close(
        ours.decode(deltas, ref), theirs.decode_single(deltas, ref), atol=1e-3, rtol=1e-4
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("stages", [[0.5], [0.5, 0.6, 0.7]])
def test_model_trains_and_detects_on_cuda(stages):
    from micrometry.particles.models.detection.maskrcnn import MaskRCNN, MaskRCNNConfig

    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNConfig(stage_ious=stages)).cuda()
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    masks = torch.stack(
        [((yy - 40) ** 2 + (xx - 50) ** 2 < 15**2), ((yy - 90) ** 2 + (xx - 80) ** 2 < 20**2)]
    )
    image = (0.1 + 0.8 * masks.any(0).float())[None, None].cuda()
    targets = [
        {
            "boxes": torch.tensor([[35.0, 25.0, 65.0, 55.0], [60.0, 70.0, 100.0, 110.0]]).cuda(),
            "masks": masks.to(torch.uint8).cuda(),
        }
    ]
    for _ in range(30):
        loss = sum(model(image, targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        out = model(image)[0]
    assert out["boxes"].is_cuda and out["masks"].shape[1:] == (28, 28)
