"""Mask R-CNN (plain PyTorch): mask pasting, the model's contract, and a tiny training run that converges."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from micrometry.particles.models.detection.anchors import grid_anchors
from micrometry.particles.models.detection.instance_targets import detection_targets
from micrometry.particles.models.detection.maskrcnn import MaskRCNN, MaskRCNNConfig
from micrometry.particles.models.detection.paste import paint_instances, paste_mask


def pasted_reference(mask: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """cv2's bilinear resize of the mask to an integer box, placed in the image and cropped to it."""
    x1, y1, x2, y2 = box
    resized = cv2.resize(mask, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    big = np.zeros((shape[0] + 200, shape[1] + 200), np.float32)
    big[100 + y1 : 100 + y2, 100 + x1 : 100 + x2] = resized
    return big[100 : 100 + shape[0], 100 : 100 + shape[1]]


@pytest.mark.parametrize(
    "box", [(3, 5, 13, 21), (0, 0, 30, 24), (-4, 20, 8, 36), (25, -3, 40, 6), (7, 7, 9, 8)]
)
def test_paste_matches_resize_reference(box):
    rng = np.random.default_rng(0)
    mask = rng.random((8, 8)).astype(np.float32)
    shape = (24, 30)
    y0, x0, values = paste_mask(torch.from_numpy(mask), np.array(box, np.float32), shape)
    image = np.zeros(shape, np.float32)
    image[y0 : y0 + values.shape[0], x0 : x0 + values.shape[1]] = values
    np.testing.assert_allclose(image, pasted_reference(mask, box, shape), atol=1e-5)


def test_paste_fractional_box_covers_pixel_centres_inside_only():
    y0, x0, values = paste_mask(torch.ones((4, 4)), np.array([2.6, 1.4, 6.5, 3.5]), (10, 10))
    # Centres x + 0.5 in [2.6, 6.5): columns 3..5; y + 0.5 in [1.4, 3.5): rows 1..2.
    assert (y0, x0, values.shape) == (1, 3, (2, 3))
    assert np.allclose(values, 1.0)


def test_paint_instances_higher_score_on_top_and_hidden_ones_dropped():
    masks = torch.ones((3, 4, 4))
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [6, 6, 9, 9]], np.float32)
    scores = np.array([0.9, 0.5, 0.3], np.float32)  # the third lies under the first: invisible
    labels, kept = paint_instances(masks, boxes, scores, (20, 20))
    assert labels.max() == 2 and kept.tolist() == pytest.approx([0.5, 0.9])
    assert labels[7, 7] == 2 and labels[12, 12] == 1 and labels[0, 0] == 2 and labels[19, 19] == 0


def test_anchors_are_centred_on_cells():
    anchors = grid_anchors(torch.tensor([[-2.0, -2.0, 2.0, 2.0]]), 8, 2, 3)
    assert anchors.shape == (6, 4)
    assert anchors[4].tolist() == [10.0, 10.0, 14.0, 14.0]  # row 1, column 1: centre (12, 12)


def test_detection_targets_boxes_and_masks():
    labels = np.zeros((10, 12), np.int32)
    labels[2:5, 3:9] = 1
    labels[7, 0] = 2  # too small: dropped
    t = detection_targets(labels)
    assert t["boxes"].tolist() == [[3.0, 2.0, 9.0, 5.0]]
    assert t["masks"].shape == (1, 10, 12) and int(t["masks"].sum()) == 18
    assert detection_targets(np.zeros((4, 4), np.int32))["boxes"].shape == (0, 4)


TINY = dict(
    widths=[8, 16, 16, 32, 32],
    channels=32,
    box_hidden=128,
    mask_hidden=32,
    rois_per_image=64,
    anchor_sizes=[12.0, 24.0, 48.0, 96.0],
    pre_nms=200,
    post_nms_train=100,
    post_nms_test=100,
)


def disc_images(rng: np.random.Generator, n: int, size: int = 64) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bright non-overlapping discs (radius 5-10 px) on a dark noisy background, with their label images."""
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for _ in range(n):
        lab = np.zeros((size, size), np.int32)
        for _ in range(rng.integers(1, 4)):
            r = rng.uniform(5, 10)
            cy, cx = rng.uniform(r, size - r, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            if not (lab[disc] > 0).any():
                lab[disc] = lab.max() + 1
        images.append((lab > 0) * 0.8 + 0.1 + rng.normal(0, 0.05, lab.shape))
        labels.append(lab)
    return np.stack(images).astype(np.float32)[:, None], labels


@pytest.mark.parametrize("stages", [[0.5], [0.5, 0.6, 0.7]])
def test_model_contract_losses_and_detections(stages):
    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNConfig(**TINY, stage_ious=stages))
    images, labels = disc_images(np.random.default_rng(1), 2)
    x = torch.from_numpy(images)
    targets = [detection_targets(lab) for lab in labels]
    targets[1] = detection_targets(np.zeros((64, 64), np.int32))  # an image without instances trains too
    losses = model(x, targets)
    cascade = {"box_class_2", "box_delta_2", "box_class_3", "box_delta_3"} if len(stages) == 3 else set()
    assert set(losses) == {"rpn_objectness", "rpn_box", "box_class", "box_delta", "mask"} | cascade
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.parameters())  # every weight trains (DDP needs that)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert len(out) == 2
    for o in out:
        k = len(o["boxes"])
        assert o["boxes"].shape == (k, 4) and o["scores"].shape == (k,) and o["masks"].shape == (k, 28, 28)
        assert (o["boxes"][:, 2:] <= 64).all() and (o["boxes"] >= 0).all()


@pytest.mark.slow
def test_tiny_maskrcnn_converges_on_discs():
    """AP50 goes from ~0 to high in 80 full-batch steps on eight 64x64 images (1.0 from step 60 on)."""
    from micrometry.particles.models.validation import evaluate_label_images

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    images, labels = disc_images(np.random.default_rng(0), 8)
    x = torch.from_numpy(images)
    targets = [detection_targets(lab) for lab in labels]
    model = MaskRCNN(MaskRCNNConfig(**TINY))
    optimiser = torch.optim.AdamW(model.parameters(), 2e-3)

    def ap50() -> float:
        model.eval()
        with torch.no_grad():
            out = model(x)
        model.train()
        found = [paint_instances(o["masks"], o["boxes"].numpy(), o["scores"].numpy(), (64, 64)) for o in out]
        return evaluate_label_images(found, labels)["AP50"]

    try:
        before = ap50()
        started = time.perf_counter()
        for _ in range(80):
            loss = sum(model(x, targets).values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        after = ap50()
    finally:
        torch.set_num_threads(threads)
    assert before < 0.2
    assert after > 0.9, f"AP50 {before:.2f} -> {after:.2f} in {time.perf_counter() - started:.0f} s"


@pytest.mark.parametrize("task_module", ["detection", "dense"])
def test_training_tasks_honour_device(task_module, monkeypatch):
    """--device cpu trains on the CPU even where CUDA is present; --device cuda without CUDA is refused."""
    from micrometry.errors import InputError
    from micrometry.particles.models.data import labelled_image
    from micrometry.particles.models.training import TrainSettings

    images, labels = disc_images(np.random.default_rng(1), 2)
    items = [
        labelled_image(f"i{k}", (im * 255).astype(np.uint8), lab, 1.0)
        for k, (im, lab) in enumerate(zip(images, labels))
    ]
    if task_module == "detection":
        from micrometry.particles.models.detection.detection_task import MaskRCNNTask as Task

        model, extra = "maskrcnn", (MaskRCNNConfig(**TINY),)
    else:
        from micrometry.particles.models.dense.dense_task import DenseTrainTask as Task

        model, extra = "center-offset", ()
    with pytest.raises(InputError, match="no CUDA device"):  # this machine has no CUDA
        Task(TrainSettings(model=model, device="cuda", widths=[4, 8]), items[:1], items[1:], *extra)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    task = Task(TrainSettings(model=model, device="cpu", widths=[4, 8]), items[:1], items[1:], *extra)
    assert task.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for module in task.modules.values() for p in module.parameters())
