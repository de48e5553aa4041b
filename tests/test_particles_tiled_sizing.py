"""Automatic size: objects that tile larger particles (texture inside large nuclei) send the size up."""

import numpy as np
import pytest

from micrometry.cli import run
from micrometry.io.coco import load_coco
from micrometry.io.image import read_image
from micrometry.particles.models import load_particle_model
from micrometry.particles.models.dense.dense_segmenter import DenseSegmenter, build_network
from micrometry.particles.models.sizing import tiled_group_diameter


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def tiled_disc(shape=(768, 768), centre=(384, 384), radius=150, piece=27) -> np.ndarray:
    """A disc cut into ``piece``-px squares with 1-px gaps: the pieces a texture gives."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cells = (yy // (piece + 1)) * 1000 + xx // (piece + 1) + 1
    inside = _disc(shape, centre, radius) & (yy % (piece + 1) < piece) & (xx % (piece + 1) < piece)
    labels = np.where(inside, cells, 0)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(shape).astype(np.int32)


def test_pieces_tiling_a_disc_give_the_discs_diameter():
    labels = tiled_disc()
    assert labels.max() > 60
    found = tiled_group_diameter(labels)
    assert found == pytest.approx(300, rel=0.1)  # the union of the pieces: about the disc


def test_separate_or_loosely_clustered_particles_tile_nothing():
    shape = (512, 512)
    rng = np.random.default_rng(0)
    separate = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(rng.integers(20, 492, (60, 2)), start=1):
        separate[_disc(shape, (y, x), 6) & (separate == 0)] = k
    assert tiled_group_diameter(separate) is None
    clusters = np.zeros(shape, np.int32)  # groups of 5 touching particles: agglomerates, not texture
    k = 0
    for gy in range(4):
        for gx in range(4):
            for i in range(5):
                k += 1
                clusters[_disc(shape, (60 + 110 * gy, 40 + 110 * gx + 15 * i), 8) & (clusters == 0)] = k
    assert tiled_group_diameter(clusters) is None
    assert tiled_group_diameter(np.zeros(shape, np.int32)) is None


def _segmenter_seeing(fine: np.ndarray, coarse: np.ndarray, coarse_below: float = 0.2) -> DenseSegmenter:
    """A segmenter whose passes return ``fine`` at ordinary scales and ``coarse`` below ``coarse_below``."""
    method, net = build_network("center-offset", (8, 16, 32))
    segmenter = DenseSegmenter(method, net.fused(), scale=None, net_diameter=20.0)
    scales: list[float] = []

    def segment_labels(image, scale=None):
        scales.append(scale)
        labels = coarse if scale < coarse_below else fine
        return labels, np.full(int(labels.max()), 0.9, np.float32)

    segmenter.segment_labels = segment_labels
    segmenter.scales = scales
    return segmenter


def test_the_size_goes_up_to_the_particles_the_pieces_tile():
    fine, whole = tiled_disc(), _disc((768, 768), (384, 384), 150).astype(np.int32)
    segmenter = _segmenter_seeing(fine, whole)
    labels, _, info = segmenter.segment_sized(np.zeros((768, 768), np.uint8))
    assert labels.max() == 1 and info["diameter_px"] == pytest.approx(300, rel=0.02)
    assert "tiled larger particles" in info["diameter_source"]
    assert min(segmenter.scales) == pytest.approx(20 / 300, rel=0.1)


def test_the_first_estimate_stands_when_the_coarse_pass_disagrees():
    fine = tiled_disc()
    for coarse in (np.zeros((768, 768), np.int32), tiled_disc(piece=7)):  # nothing; pieces again
        labels, _, info = _segmenter_seeing(fine, coarse).segment_sized(np.zeros((768, 768), np.uint8))
        assert labels.max() == fine.max() and info["diameter_source"] == "estimated"


def test_the_shipped_model_finds_large_textured_nuclei_whole(tmp_path):
    # 150-400 px nuclei with chromatin texture: segmented at the texture's size they came out as
    # 127-378 pieces per image (4-6 nuclei)
    argv = [
        "synth",
        "particles",
        tmp_path / "d",
        "--truth",
        tmp_path / "t",
        "--n-train",
        "1",
        "--n-test",
        "0",
    ]
    argv += ["--modes", "chromatin", "--size-range", "150,400", "--density", "touching", "--seed", "5002"]
    assert run(argv) == 0
    data = load_coco(tmp_path / "d" / "train")
    image_id = data.images[0].id
    truth = len(data.annotations[image_id])
    found = load_particle_model("shipped").segment(read_image(data.image_path(image_id)))
    assert truth >= 2 and 0.5 * truth <= found.labels.max() <= 2 * truth
    assert "tiled" in found.info["diameter_source"]
