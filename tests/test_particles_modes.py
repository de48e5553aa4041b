"""Imaging modes, size/density/noise options and occlusion of the particle generator."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage as ndi

from helpers import synth_particles_argv
from micrometry.cli import run
from micrometry.io.coco import rle_to_mask
from micrometry.io.image import read_image
from micrometry.synth.particle_dataset import with_options
from micrometry.synth.particle_optics import (
    MODES,
    DistractorParams,
    ImagingParams,
    OpticsParams,
    Particle,
    render_particles,
)
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image
from micrometry.synth.particle_shapes import PopulationParams

H, W = 128, 160
DARK_PARTICLES = {"brightfield", "low-contrast", "uneven", "phase"}
BRIGHT_PARTICLES = {"phase-negative", "fluorescence", "darkfield"}


def small(**population) -> SuspensionParams:
    """A small frame at full-frame density (so it holds enough particles to measure)."""
    return SuspensionParams(
        height=H, width=W, population=PopulationParams(count_range=(640, 1600), **population)
    )


def clean(mode: str) -> SuspensionParams:
    """A scene to check truth against pixels: no debris, no defocus, no transparent particles, no noise."""
    return SuspensionParams(
        height=H,
        width=W,
        modes=(mode,),
        population=PopulationParams(
            count_range=(300, 300),
            size_range_px=(12.0, 28.0),
            size_median_px=18.0,
            transparent_fraction=0.0,
            cluster_fraction=0.0,
        ),
        optics=OpticsParams(defocus_max_sigma_px=0.0, full_well=1e7, read_noise_dn=0.0),
        distractors=DistractorParams(
            bubbles_range=(0, 0), specks_range=(0, 0), fibres_range=(0, 0), ghosts_range=(0, 0)
        ),
    )


def test_modes_table_covers_both_polarities():
    assert set(MODES) == DARK_PARTICLES | BRIGHT_PARTICLES


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_has_its_stated_polarity(mode):
    r = render_image(small(), image_rng(0, "train", 0), mode)
    assert r.mode == mode
    inside = r.labels > 0
    # the background near the particles, past their halos (the illumination varies across the frame)
    near = ndi.binary_dilation(inside, iterations=14) & ~ndi.binary_dilation(inside, iterations=8)
    far = ~ndi.binary_dilation(inside, iterations=8)
    assert inside.sum() > 500 and near.sum() > 500
    contrast = float(r.image[inside].mean()) - float(r.image[near].mean())
    if mode in DARK_PARTICLES:
        assert contrast < -5
    else:
        assert contrast > 5
    if mode in ("fluorescence", "darkfield"):
        assert np.median(r.image[far]) < 40  # a dark background, not an inverted bright one


@pytest.mark.parametrize("mode", list(MODES))
def test_truth_matches_a_threshold_of_the_noise_free_render(mode):
    r = render_image(clean(mode), image_rng(1, "test", 0))
    truth = r.labels > 0
    assert 0.05 < truth.mean() < 0.6
    image = r.image.astype(np.float32) + 1
    # flat-field: the illumination varies across the frame (strongly in ``uneven``)
    ratio = image / ndi.median_filter(image, size=41)
    dark = mode in DARK_PARTICLES
    signal = 1 - ratio if dark else ratio - 1
    found = signal > np.median(signal[truth]) / 2
    found = ndi.binary_fill_holes(found)  # dark field lights the edges; phase shade-off dims large interiors
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.75, f"{mode}: IoU {iou:.2f} between the truth and a threshold of the image"


def test_phase_halo_and_dark_field_edges():
    for mode, sign in (("phase", 1), ("phase-negative", -1)):
        r = render_image(clean(mode), image_rng(2, "test", 0))
        inside = r.labels > 0
        ring = ndi.binary_dilation(inside, iterations=2) & ~inside
        near = ndi.binary_dilation(inside, iterations=16) & ~ndi.binary_dilation(inside, iterations=10)
        # bright halo around dark particles (positive), dark halo around bright ones (negative)
        assert sign * (r.image[ring].mean() - r.image[near].mean()) > 8
    r = render_image(clean("darkfield"), image_rng(2, "test", 0))
    inside = r.labels > 0
    edge = inside & ~ndi.binary_erosion(inside, iterations=2)
    core = ndi.binary_erosion(inside, iterations=5)
    assert core.sum() > 50 and r.image[edge].mean() > r.image[core].mean() + 5


def test_same_seed_same_image_in_every_mode():
    params = small()
    for mode in ("fluorescence", "phase", "darkfield"):
        a = render_image(params, image_rng(7, "train", 2), mode)
        b = render_image(params, image_rng(7, "train", 2), mode)
        np.testing.assert_array_equal(a.image, b.image)
        assert a.annotations == b.annotations


def test_default_mode_is_brightfield_and_mode_does_not_change_the_scene():
    params = small()
    default = render_image(params, image_rng(3, "train", 0))
    assert default.mode == "brightfield"
    np.testing.assert_array_equal(
        default.image, render_image(params, image_rng(3, "train", 0), "brightfield").image
    )
    # the particles are drawn from the same stream in every mode: same outlines, other pixels
    fluo = render_image(params, image_rng(3, "train", 0), "fluorescence")
    assert [p["X"] for p in fluo.particles] == [p["X"] for p in default.particles]
    assert not np.array_equal(fluo.image, default.image)


def test_noise_levels_order_the_background_noise():
    def background_noise(level):
        r = render_image(with_options(clean("brightfield"), noise=level), image_rng(4, "test", 0))
        far = ~ndi.binary_dilation(r.labels > 0, iterations=8)
        # high-pass: the residual after a small median is the pixel noise (the illumination is smooth)
        residual = r.image.astype(np.float32) - ndi.median_filter(r.image.astype(np.float32), 5)
        return float(residual[far].std())

    low, normal, high = (background_noise(level) for level in ("low", "normal", "high"))
    assert low < normal < high and high > 2 * normal


def test_size_range_option_sets_the_equivalent_diameters():
    params = with_options(small(), size_range_px=(8.0, 150.0))
    d = np.concatenate(
        [
            [p["EqDiameter"] for p in render_image(params, image_rng(5, "train", i)).particles]
            for i in range(4)
        ]
    )
    assert d.min() >= 8.0 - 1e-6 and d.max() <= 150.0 + 1e-6
    assert d.min() < 14 and d.max() > 80  # the whole range is used, not just the middle
    with pytest.raises(ValueError, match="min < max"):
        with_options(small(), size_range_px=(20.0, 10.0))


def test_density_presets_order_the_covered_area():
    covered = {}
    for density in ("sparse", "normal", "crowded"):
        params = with_options(SuspensionParams(height=256, width=320), density=density)
        covered[density] = np.mean(
            [(render_image(params, image_rng(6, "train", i)).labels > 0).mean() for i in range(3)]
        )
    assert covered["sparse"] < covered["normal"] < covered["crowded"]
    assert covered["crowded"] > 0.15
    touching = with_options(SuspensionParams(height=256, width=320), density="touching")
    r = render_image(touching, image_rng(6, "train", 0))
    labels = r.labels
    touches = [
        np.isin(labels[ndi.binary_dilation(labels == k, iterations=2)], (0, k), invert=True).any()
        for k in range(1, labels.max() + 1)
    ]
    assert np.mean(touches) > 0.6  # most particles touch another one ...
    assert (
        np.median([row["visible_fraction"] for row in r.particles if not row["border_cut"]]) > 0.85
    )  # barely hidden


def _mask(seg, h, w):
    if isinstance(seg, list):
        return rle_to_mask(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
    return rle_to_mask(seg)  # a visible part with a hole is written as RLE


def test_overlapping_density_occludes_and_visible_parts_do_not_overlap():
    params = with_options(SuspensionParams(height=256, width=320), density="overlapping")
    assert params.population.occlusion
    r = render_image(params, image_rng(8, "train", 0))
    inner = [row for row in r.particles if not row["border_cut"]]
    hidden = [row for row in inner if row["visible_fraction"] < 0.7]
    assert len(hidden) > 0.25 * len(inner)  # many particles are partly hidden by others
    assert np.median([row["visible_fraction"] for row in inner]) < 0.85
    masks = np.stack([_mask(a["segmentation"], 256, 320) for a in r.annotations])
    assert len(masks) > 20
    cover = masks.sum(0)
    # each pixel belongs to one visible part: polygon rasterisation leaves at most boundary slivers
    assert (cover > 1).sum() < 0.03 * (cover > 0).sum()
    for i, m in enumerate(masks, start=1):
        truth = r.labels == i
        assert (m & truth).sum() / (m | truth).sum() > 0.8


def _disk(cx, cy, radius):
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


@pytest.mark.parametrize("mode", ["brightfield", "fluorescence"])
def test_occlusion_shows_the_top_particle_where_the_truth_gives_it_the_pixels(mode):
    # two overlapping transparent particles; no random texture or brightness, so a drawing is exact
    below = Particle("ellipse", _disk(30, 40, 20), True, 0.0, 0.5, 0.3, 0.4, 0.1)
    above = Particle("ellipse", _disk(52, 40, 20), True, 0.0, 0.5, -0.02, 0.3, 0.1)
    optics = OpticsParams(texture_amplitude=0.0)
    imaging = ImagingParams(fluorescence_brightness_range=(0.8, 0.8))
    emission = mode == "fluorescence"

    def draw(particles, occlusion):
        field = np.zeros((80, 96), np.float32) if emission else np.ones((80, 96), np.float32)
        owner = np.zeros((80, 96), np.int32)
        render_particles(field, owner, particles, optics, np.random.default_rng(0), mode, imaging, occlusion)
        return field, owner

    both, owner = draw([below, above], occlusion=True)
    alone, _ = draw([above], occlusion=True)
    translucent, _ = draw([below, above], occlusion=False)
    yy, xx = np.mgrid[0:80, 0:96]
    # deep inside both particles (4 blur sigmas), where the truth gives the pixels to the upper one
    overlap = (np.hypot(xx + 0.5 - 52, yy + 0.5 - 40) < 14) & (np.hypot(xx + 0.5 - 30, yy + 0.5 - 40) < 14)
    assert overlap.sum() > 20 and (owner[overlap] == 2).all()
    np.testing.assert_allclose(both[overlap], alone[overlap], atol=1e-3)
    assert np.abs(translucent[overlap] - alone[overlap]).max() > 0.05  # without occlusion the lower one shows


def test_cli_mix_writes_and_records_each_images_mode(tmp_path):
    out, truth = tmp_path / "syn", tmp_path / "truth"
    frame = {"n_train": 3, "n_batch": 0, "height": 128, "width": 160}
    look = {"size_range": "10,40", "noise": "low", "density": "crowded"}
    args = synth_particles_argv(
        out, truth, n_test=3, **frame, modes="brightfield,fluorescence,phase-negative", **look
    )
    assert run(args) == 0
    coco = json.loads((out / "train" / "annotations.json").read_text())
    modes = [im["imaging_mode"] for im in coco["images"]]
    assert modes == ["brightfield", "fluorescence", "phase-negative"]
    means = [read_image(out / "train" / "images" / im["file_name"]).mean() for im in coco["images"]]
    assert means[1] < 60 < means[0]  # the fluorescence image is dark
    rows = pd.read_csv(truth / "test_particles.csv")
    answers = json.loads((truth / "test_annotations.json").read_text())
    by_image = {im["file_name"]: im["imaging_mode"] for im in answers["images"]}
    assert set(rows["imaging_mode"]) == {"brightfield", "fluorescence", "phase-negative"}
    assert all(by_image[f] == m for f, m in zip(rows["image"], rows["imaging_mode"], strict=False))
    assert rows["EqDiameter"].between(10 - 1e-6, 40 + 1e-6).all()
    config = json.loads((out / "synth_config.json").read_text())
    assert config["params"]["modes"] == ["brightfield", "fluorescence", "phase-negative"]
    assert config["params"]["optics"]["full_well"] == 4000.0
    # image k of a mix is image k of its mode alone: the mix does not change the images
    single = tmp_path / "single"
    assert (
        run(synth_particles_argv(single, tmp_path / "t1", n_test=0, **frame, mode="fluorescence", **look))
        == 0
    )
    assert (single / "train" / "images" / "train_0001.png").read_bytes() == (
        out / "train" / "images" / "train_0001.png"
    ).read_bytes()
    # the written config reproduces the mix
    again = tmp_path / "again"
    assert (
        run(synth_particles_argv(again, tmp_path / "t2", n_test=0, **frame, params=out / "synth_config.json"))
        == 0
    )
    assert (again / "train" / "images" / "train_0002.png").read_bytes() == (
        out / "train" / "images" / "train_0002.png"
    ).read_bytes()


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--modes", "brightfield,xray", "unknown imaging mode 'xray'"),
        ("--noise", "extreme", "unknown noise level 'extreme'"),
        ("--density", "packed", "unknown density 'packed'"),
        ("--size-range", "8", "--size-range must be MIN,MAX"),
        ("--size-range", "50,10", "min < max"),
    ],
)
def test_cli_refuses_bad_options_in_one_line(tmp_path, capsys, option, value, message):
    out = tmp_path / "syn"
    assert run(synth_particles_argv(out, tmp_path / "t", option, value, n_train=1, height=64, width=64)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_params_file_accepts_modes_and_imaging_knobs(tmp_path):
    params = SuspensionParams.from_dict({"modes": ["darkfield"], "imaging": {"darkfield_interior": 0.5}})
    assert params.modes == ("darkfield",) and params.imaging.darkfield_interior == 0.5
    with pytest.raises(ValueError, match="unknown imaging parameter"):
        SuspensionParams.from_dict({"imaging": {"xray_dose": 1}})
    with pytest.raises(ValueError, match="unknown imaging mode"):
        SuspensionParams.from_dict({"modes": ["sonar"]})
    assert dataclasses.asdict(params)["modes"] == ("darkfield",)
