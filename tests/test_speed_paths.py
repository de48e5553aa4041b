"""Issue 23, point 6: the faster prediction paths give the outputs of the paths they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.measure import find_contours
from skimage.segmentation import find_boundaries

from micrometry.io.image import write_image
from micrometry.particles.models.dense.unet import UNet
from micrometry.particles.models.sizing import estimate_diameter
from micrometry.particles.predict import inner_boundaries, overlay
from micrometry.particles.rois import label_polygons, read_roiset, roi_bytes, write_polygons
from particle_scenes import make_scene


def marching_squares_polygons(labels):
    """The ROI outlines as they were computed before: skimage's marching squares for every particle."""
    polygons = {}
    for index, box in enumerate(ndimage.find_objects(labels.astype(np.int64))):
        if box is None:
            continue
        mask = np.pad(labels[box] == index + 1, 1).astype(np.float32)
        contours = find_contours(mask, 0.5, fully_connected="high")
        if contours:
            outline = max(contours, key=len)[:-1]
            x = outline[:, 1] - 1 + box[1].start + 0.5
            y = outline[:, 0] - 1 + box[0].start + 0.5
            polygons[index + 1] = drop_collinear_one(np.column_stack([x, y]))
    return polygons


def drop_collinear_one(xy):
    """The ROI outlines' vertex thinning as it was done before: one polygon at a time."""
    before, after = xy - np.roll(xy, 1, axis=0), np.roll(xy, -1, axis=0) - xy
    turn = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    return xy[turn] if turn.sum() >= 3 else xy


def same_polygon(p, q):
    """Equal vertex cycles, whatever the start vertex and the direction."""
    if len(p) != len(q):
        return False
    return any(np.allclose(np.roll(c, k, axis=0), p) for c in (q, q[::-1]) for k in range(len(c)))


def awkward_labels():
    """Particles that test the outline tracer: touching, one pixel wide, diagonal-only joins, holes, two parts."""
    _, labels = make_scene(np.random.default_rng(3), 128, 160, n=14)
    labels = labels.copy()
    top = labels.max()
    labels[2:3, 2:40] = top + 1  # a one-pixel line
    labels[10, 60], labels[11, 61], labels[12, 62] = top + 2, top + 2, top + 2  # pixels touching by corners
    labels[20:23, 60:63] = top + 2  # ... and a block beside them
    ring = np.zeros((15, 15), bool)
    ring[2:13, 2:13] = True
    ring[6:9, 6:9] = False  # a hole
    labels[100:115, 140:155][ring] = top + 3
    labels[5:8, 140:143] = top + 4  # one particle in two parts
    labels[15:20, 145:150] = top + 4
    labels[60, 80] = top + 5  # a single pixel
    return labels


def test_roi_outlines_equal_the_marching_squares_outlines():
    labels = awkward_labels()
    fast, reference = label_polygons(labels), marching_squares_polygons(labels)
    assert fast.keys() == reference.keys() and len(fast) == labels.max()
    for key in reference:
        assert same_polygon(fast[key], reference[key]), key


def test_roi_bytes_are_roifiles():
    import roifile

    polygons = label_polygons(awkward_labels())
    polygons["far"] = np.array([[40000.5, 10.5], [40010.0, 10.5], [40010.0, 30.5]])  # past int16: wraps
    polygons["neg"] = np.array([[-3.5, -2.0], [5.5, -2.0], [5.5, 7.5]])
    for (name, xy), data in zip(
        polygons.items(), roi_bytes(list(polygons.values()), list(polygons)), strict=True
    ):
        roi = roifile.ImagejRoi.frompoints(xy.astype(np.float32), name=str(name))
        roi.roitype = roifile.ROI_TYPE.POLYGON
        assert data == roi.tobytes(), name


def test_a_written_roi_set_is_roifiles_file(tmp_path):
    import roifile

    polygons = label_polygons(awkward_labels())
    rois = []
    for name, xy in polygons.items():
        rois.append(roifile.ImagejRoi.frompoints(xy.astype(np.float32), name=str(name)))
        rois[-1].roitype = roifile.ROI_TYPE.POLYGON
    roifile.roiwrite(tmp_path / "roifile.zip", rois)
    write_polygons(tmp_path / "ours.zip", polygons)
    assert (tmp_path / "ours.zip").read_bytes() == (tmp_path / "roifile.zip").read_bytes()


def test_a_written_roi_set_reads_back(tmp_path):
    polygons = label_polygons(awkward_labels())
    (tmp_path / "set.zip").write_bytes(b"old")  # replaced, not appended to
    assert write_polygons(tmp_path / "set.zip", polygons) == len(polygons)
    back = read_roiset(tmp_path / "set.zip")
    assert list(back) == [str(k) for k in polygons]
    for key, xy in polygons.items():
        np.testing.assert_allclose(back[str(key)], xy)
    assert [p.name for p in tmp_path.iterdir()] == ["set.zip"]  # no temporary left


def test_inner_boundaries_equal_skimage():
    labels = awkward_labels()
    assert np.array_equal(inner_boundaries(labels), find_boundaries(labels, mode="inner"))
    assert not inner_boundaries(np.zeros((5, 5), np.int32)).any()


def test_overlay_keeps_the_image_off_the_outlines(tmp_path):
    labels = awkward_labels()
    image = (np.arange(labels.size).reshape(labels.shape) % 251).astype(np.uint8)
    rgb = overlay(image, labels)
    edges = find_boundaries(labels, mode="inner")
    gray = rgb[~edges]
    assert (gray[:, 0] == gray[:, 1]).all() and (gray[:, 1] == gray[:, 2]).all()
    assert (rgb[edges].max(axis=1) - rgb[edges].min(axis=1) > 100).all()  # saturated colours on outlines
    write_image(tmp_path / "o.png", rgb, png_level=1)  # the fast zlib level is still lossless
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), rgb)


def test_fused_network_predicts_what_the_trained_one_does():
    torch.manual_seed(0)
    net = UNet(4, (8, 16, 32))
    with torch.no_grad():  # batch norm statistics that are not the identity
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.rand(2, 1, 64, 96)
    with torch.inference_mode():
        fused = net.fused()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(x), net(x), atol=1e-4, rtol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the trained network is untouched


def test_estimate_diameter_leaves_the_refinement_to_a_caller_that_declines_it():
    shape, true_diameter = (400, 400), 60.0
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate([(100, 100), (100, 300), (300, 100), (300, 300)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (true_diameter / 2) ** 2] = i
    calls = []

    def segment_at(scale):
        calls.append(scale)
        return labels, np.ones(4, np.float32)

    diameter, scale, result = estimate_diameter(segment_at, shape, 20.0, refine=lambda s: False)
    # the first guess (30 px) is 2x off: the estimate comes back without a second pass
    assert result is None and len(calls) == 1
    assert scale == pytest.approx(20 / true_diameter, rel=0.05)
    diameter, scale, result = estimate_diameter(segment_at, shape, 20.0)
    assert result is not None and len(calls) == 3  # by default it refines


@pytest.mark.slow
def test_shipped_model_sizes_a_large_image_in_two_passes(tmp_path):
    from micrometry.particles.models.base import load_particle_model
    from micrometry.particles.models.sizing import PROBE_NET_PX

    rng = np.random.default_rng(5)
    side = 1100  # the sizing pass sees a central window: the whole image is the second pass
    yy, xx = np.mgrid[:side, :side]
    image = np.full((side, side), 200.0)
    for cy, cx in rng.uniform(30, side - 30, (150, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 20**2] = 60  # ~40 px particles: the second pass at about 0.5
    image = np.clip(ndimage.gaussian_filter(image, 1) + rng.normal(0, 4, image.shape), 0, 255).astype(
        np.uint8
    )
    segmenter = load_particle_model("shipped")
    passes = []
    maps = segmenter.predict_maps
    segmenter.predict_maps = lambda im, scale=None: (passes.append(im.shape), maps(im, scale))[1]
    found = segmenter.segment(image)
    assert len(passes) == 2 and passes[0][0] < side and passes[1] == (side, side)
    assert PROBE_NET_PX < side * found.info["scale"]
    assert 30 < found.info["diameter_px"] < 50 and found.count > 60


def test_peaks_by_dilation_equal_the_max_pool_peaks():
    import torch.nn.functional as F

    from micrometry.particles.models.dense.decode import find_peaks

    def max_pool_peaks(heat, radius, threshold):  # how find_peaks found them before
        t = torch.from_numpy(np.ascontiguousarray(heat, dtype=np.float32))[None, None]
        pooled = F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)
        rows, cols = np.nonzero(((t == pooled) & (t > threshold))[0, 0].numpy())
        order = np.argsort(-heat[rows, cols], kind="stable")
        return np.stack([rows[order], cols[order]], axis=1)

    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.random((120, 150)), 2).astype(np.float32)
    plateaus = np.round(rng.random((60, 70)) * 4).astype(np.float32) / 4  # ties and equal neighbours
    for heat in (smooth, plateaus, rng.random((40, 50)).astype(np.float32), np.full((9, 9), -1, np.float32)):
        for radius in (1, 3):
            expected = max_pool_peaks(heat, radius, 0.1)
            assert np.array_equal(find_peaks(heat, radius, 0.1), expected)
