"""Tiled inference: stitched maps equal a single pass, instances across tile borders stay whole."""

import numpy as np
import pytest
import torch

from micrometry.particles.models.dense.dense_segmenter import DEFAULT_TILE, DenseSegmenter, build_network
from micrometry.particles.models.tiling import balanced_tile, flip_tta, predict_tiled, tile_spans
from particle_scenes import make_scene


def test_tile_spans_partition_the_axis_with_margins():
    for size, tile, overlap in [(100, 40, 16), (257, 64, 20), (64, 64, 8), (30, 64, 8)]:
        spans = tile_spans(size, tile, overlap)
        kept = np.zeros(size, int)
        for start, stop, keep_start, keep_stop in spans:
            assert 0 <= start <= keep_start < keep_stop <= stop <= size and stop - start <= tile
            kept[keep_start:keep_stop] += 1
            # the kept part stays clear of the tile's own borders (except at the image border)
            assert keep_start == 0 or keep_start - start >= overlap // 2
            assert keep_stop == size or stop - keep_stop >= overlap // 2
        assert (kept == 1).all()


def test_tiles_are_balanced_not_mostly_overlap():
    # 856 px in 768 px tiles: two tiles of 464 (multiple of 16), not 768 + 768 (88 % computed twice)
    assert balanced_tile(856, 768, 64, 16) == 464
    spans = tile_spans(856, 768, 64, 16)
    assert [(a, b) for a, b, _, _ in spans] == [(0, 464), (392, 856)]
    assert balanced_tile(500, 768, 64) == 500  # fits one tile
    for size in range(65, 3000, 37):
        length = balanced_tile(size, 256, 64, 16)
        n = len(tile_spans(size, 256, 64, 16))
        assert length <= 256 and (size <= 256 or length % 16 == 0)
        assert n == 1 or n == -(-(size - 64) // (256 - 64))  # the fewest tiles of at most 256 px


def _untrained_segmenter(model, tile, overlap, seed=0):
    torch.manual_seed(seed)
    method, net = build_network(model, (8, 16, 32))
    # a BatchNorm with real running statistics behaves like a trained net in eval mode
    with torch.no_grad():
        net.train()
        net(torch.randn(2, 1, 64, 64))
    return DenseSegmenter(method, net, scale=1.0, tile=tile, overlap=overlap)


def test_tiled_maps_equal_single_pass_when_the_overlap_covers_the_receptive_field():
    seg = _untrained_segmenter("center-offset", tile=96, overlap=64)
    image = torch.rand(1, 150, 222)
    with torch.no_grad():
        single = predict_tiled(seg._forward, image, tile=1024, overlap=0, multiple=seg.net.multiple)
        tiled = predict_tiled(seg._forward, image, tile=96, overlap=64, multiple=seg.net.multiple)
    assert tiled.shape == single.shape == (4, 150, 222)
    # a 3-level U-Net sees about +-30 px: with 32 px margins the tiles agree to float noise
    assert torch.allclose(tiled, single, atol=1e-4)


def test_image_that_fits_one_tile_gives_the_same_instances_as_a_single_pass():
    image, _ = make_scene(np.random.default_rng(1), 96, 112, n=10)
    one = _untrained_segmenter("unet-watershed", tile=128, overlap=16)
    big = _untrained_segmenter("unet-watershed", tile=512, overlap=16)
    a, b = one.segment_labels(image), big.segment_labels(image)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_flip_tta_keeps_vector_fields_consistent():
    # a "network" that outputs the x coordinate as dx: flipping must not change the field
    def forward(x):
        h, w = x.shape[-2:]
        xs = torch.arange(w, dtype=torch.float32).expand(x.shape[0], 1, h, w)
        return torch.cat([x, x, torch.zeros_like(x), xs], dim=1)

    x = torch.rand(1, 1, 8, 10)
    averaged = flip_tta(forward, (2, 3))(x)
    # un-flipped and negated, the flipped passes give x - (w - 1): the mean keeps slope +1 per
    # pixel; without the sign change the flips would cancel it to a constant
    assert torch.allclose(averaged[0, 3, :, 1:] - averaged[0, 3, :, :-1], torch.ones(8, 9))
    assert torch.allclose(averaged[:, 0], x[:, 0])


@pytest.mark.slow
def test_instances_crossing_tile_borders_are_neither_split_nor_duplicated(tmp_path, trained_run):
    from micrometry.particles.models import load_particle_model

    run = trained_run("center-offset")
    image, truth = make_scene(np.random.default_rng(7), 160, 200, n=24)
    single = load_particle_model(run, tile=1024).segment(image).labels
    tiled = load_particle_model(run, tile=64).segment(image).labels  # 64 px tiles, 32 px overlap
    assert tiled.max() == single.max() > 10
    # every instance of the single pass is found once, with the same pixels up to float noise
    for i in range(1, single.max() + 1):
        ids, counts = np.unique(tiled[single == i], return_counts=True)
        best = ids[np.argmax(counts)]
        assert best > 0
        inter = counts.max()
        union = (single == i).sum() + (tiled == best).sum() - inter
        assert inter / union > 0.95
    # and several particles do cross tile borders (kept regions change every 32 px)
    from micrometry.particles.models.tiling import tile_spans

    borders = [span[3] for span in tile_spans(200, 64, 32)[:-1]]
    crossing = {i for x in borders for i in np.unique(single[:, x - 1]) if i and i in single[:, x]}
    assert len(crossing) >= 3


def test_tiles_go_to_the_network_together_up_to_a_pixel_budget():
    calls = []

    def forward(x):
        calls.append(tuple(x.shape))
        return x.repeat(1, 2, 1, 1)

    image = torch.rand(1, 300, 400)
    maps = predict_tiled(forward, image, tile=128, overlap=32, multiple=16, batch_pixels=3 * 128 * 128)
    assert torch.equal(maps[:1], image) and torch.equal(maps[1:], image)
    # 3 x 4 tiles of 128 px, three per call (the budget), the last call the rest
    assert [c[0] for c in calls] == [3, 3, 3, 3] and all(c[2:] == (128, 128) for c in calls)
    calls.clear()
    predict_tiled(forward, image, tile=128, overlap=32, multiple=16, batch_pixels=1)
    assert len(calls) == 12 and all(c[0] == 1 for c in calls)  # at least one tile per call


def test_a_1024_x_1280_image_is_one_network_pass_at_scale_1():
    seg = _untrained_segmenter("center-offset", tile=DEFAULT_TILE, overlap=64)
    calls = []
    forward = seg._forward
    seg._forward = lambda x: calls.append(tuple(x.shape)) or forward(x)
    seg.predict_maps(np.zeros((1024, 1280), np.uint8), 1.0)
    assert calls == [(1, 1, 1024, 1280)]
