"""The realism modes of the particle generator: textured grounds, texture inside particles, 16-bit
high dynamic range, large particles and texture-only images (see docs/particles-data.md)."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from micrometry.cli import run
from micrometry.io.image import read_image
from micrometry.synth.particle_dataset import with_options
from micrometry.synth.particle_optics import (
    ALL_MODES,
    MODES,
    REALISM_MODES,
    DistractorParams,
    ImagingParams,
    centre_profile,
    check_mode,
    mode_family,
)
from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

H, W = 160, 200
NO_DEBRIS = ("bubbles_range", "specks_range", "fibres_range", "ghosts_range")


def scene(mode: str, sizes=(14.0, 30.0), density="normal", seed=0, debris=True, **imaging):
    distractors = DistractorParams() if debris else DistractorParams(**dict.fromkeys(NO_DEBRIS, (0, 0)))
    params = with_options(
        SuspensionParams(height=H, width=W, imaging=ImagingParams(**imaging), distractors=distractors),
        modes=[mode],
        density=density,
        size_range_px=sizes,
    )
    return render_image(params, image_rng(seed, "train", 0), mode)


def background_roughness(image: np.ndarray, labels: np.ndarray) -> float:
    """Relative standard deviation of the background after removing the smooth illumination."""
    image = image.astype(np.float32) + 1
    flat = image / ndi.gaussian_filter(image, 40)
    far = ~ndi.binary_dilation(labels > 0, iterations=8)
    return float(flat[far].std())


def test_realism_modes_are_known_and_have_a_family():
    assert set(ALL_MODES) == set(MODES) | set(REALISM_MODES)
    assert {mode_family(m) for m in REALISM_MODES} == {"transmission", "emission", "relief"}
    for mode in REALISM_MODES:
        assert check_mode(mode) == mode
    with pytest.raises(ValueError, match="unknown imaging mode"):
        check_mode("confocal")


@pytest.mark.parametrize("mode", list(REALISM_MODES))
def test_realism_modes_render_particles_with_truth(mode):
    r = scene(mode, density="crowded")
    assert r.mode == mode and len(r.annotations) >= 5
    assert r.labels.max() == len(r.annotations)
    assert r.image.dtype == (np.uint16 if mode == "fluorescence-hdr" else np.uint8)
    # the particles differ from their surroundings (either sign: DIC has both)
    inside = r.labels > 0
    ring = ndi.binary_dilation(inside, iterations=6) & ~ndi.binary_dilation(inside, iterations=2)
    scale = 257.0 if r.image.dtype == np.uint16 else 1.0
    diff = np.abs(r.image[inside].astype(np.float32) - np.median(r.image[ring]))
    assert np.percentile(diff, 90) / scale > 10


def test_tissue_ground_is_textured_where_brightfield_is_flat():
    tissue = scene("tissue", debris=False, ground_grain_range=(0.2, 0.2), ground_membrane_range=(0.3, 0.3))
    plain = scene("brightfield", debris=False)
    assert background_roughness(tissue.image, tissue.labels) > 2 * background_roughness(
        plain.image, plain.labels
    )


def test_dic_shows_particles_in_relief_bright_on_one_side_dark_on_the_other():
    r = scene("dic", sizes=(24.0, 30.0), density="sparse", dic_ground_relief_range=(0.0, 0.0))
    image = r.image.astype(np.float32)
    bg = float(np.median(image[~ndi.binary_dilation(r.labels > 0, iterations=6)]))
    bright = dark = 0
    for k in range(1, r.labels.max() + 1):
        edge = ndi.binary_dilation(r.labels == k, iterations=1) & ~ndi.binary_erosion(
            r.labels == k, iterations=2
        )
        values = image[edge]
        bright += values.max() > bg + 15
        dark += values.min() < bg - 15
    assert r.labels.max() >= 2
    assert bright >= r.labels.max() - 1 and dark >= r.labels.max() - 1


def test_chromatin_nuclei_are_more_textured_inside_than_plain_fluorescence():
    def inner_cv(r):
        core = ndi.binary_erosion(r.labels > 0, iterations=3)
        values = r.image[core].astype(np.float32)
        # per particle, so that brightness differences between particles do not count
        cvs = [
            values[r.labels[core] == k].std() / values[r.labels[core] == k].mean()
            for k in np.unique(r.labels[core])
        ]
        return float(np.median(cvs))

    kw = {"sizes": (30.0, 44.0), "density": "sparse", "seed": 3}
    # without cell bodies, whose light under a nucleus would only dilute its texture
    assert inner_cv(scene("chromatin", cytoplasm_fraction=0.0, **kw)) > 2 * inner_cv(
        scene("fluorescence", **kw)
    )


def test_chromatin_cell_bodies_glow_around_the_nuclei_and_are_not_annotated():
    kw = {"sizes": (16.0, 24.0), "density": "sparse", "seed": 5, "debris": False}
    bare = scene("chromatin", cytoplasm_fraction=0.0, **kw)
    cells = scene("chromatin", cytoplasm_fraction=1.0, cytoplasm_brightness_range=(0.2, 0.2), **kw)
    assert np.array_equal(bare.labels, cells.labels) and len(cells.annotations) >= 2

    def ring_over_far(r):
        nuclei = r.labels > 0
        ring = ndi.binary_dilation(nuclei, iterations=8) & ~ndi.binary_dilation(nuclei, iterations=3)
        far = ~ndi.binary_dilation(nuclei, iterations=60)
        return float(np.median(r.image[ring])) - float(np.median(r.image[far]))

    assert ring_over_far(cells) > ring_over_far(bare) + 5


def test_centre_profile_is_pale_in_the_middle_and_one_at_the_edge():
    disk = np.hypot(*np.mgrid[-20:21, -20:21]) < 18
    pale = centre_profile(disk, 0.8)
    assert pale[20, 20] == pytest.approx(0.2, abs=0.05) and pale[20, 3] > 0.9
    assert centre_profile(disk, -0.5)[20, 20] == pytest.approx(1.5, abs=0.05)


def test_hdr_is_16_bit_with_saturated_and_dim_particles_in_one_image():
    r = scene("fluorescence-hdr", sizes=(10.0, 20.0), density="crowded", seed=2)
    assert r.image.dtype == np.uint16
    means = ndi.mean(r.image.astype(np.float64), r.labels, np.arange(1, r.labels.max() + 1))
    background = float(np.median(r.image[~ndi.binary_dilation(r.labels > 0, iterations=8)]))
    signal = np.sort(means - background)
    assert (r.image == 65535).any()  # the brightest particles saturate
    assert signal[-1] > 10 * max(signal[len(signal) // 10], 1.0)  # a decade and more between particles
    assert signal[0] < 255 * 20  # dim particles stay dim (< 20 gray levels of an 8-bit scale)


@pytest.mark.parametrize("mode", ["tissue", "dic", "chromatin"])
def test_texture_only_images_have_no_particles(mode):
    r = scene(mode, density="none")
    assert r.annotations == [] and r.particles == [] and not r.labels.any()
    assert r.image.std() > 2  # not a blank frame: a ground, debris, noise


def test_cli_writes_large_particles_16_bit_and_texture_only_images(tmp_path):
    out, truth = tmp_path / "syn", tmp_path / "truth"
    common = ["--n-test", "2", "--n-batch", "0", "--height", "256", "--width", "320", "--overwrite"]
    args = ["synth", "particles", str(out), "--truth", str(truth), "--n-train", "2"]
    assert (
        run(
            [
                *args,
                *common,
                "--modes",
                "tissue,fluorescence-hdr",
                "--size-range",
                "150,400",
                "--density",
                "sparse",
            ]
        )
        == 0
    )
    coco = json.loads((out / "train" / "annotations.json").read_text())
    assert [im["imaging_mode"] for im in coco["images"]] == ["tissue", "fluorescence-hdr"]
    assert read_image(out / "train" / "images" / coco["images"][1]["file_name"]).dtype == np.uint16
    rows = pd.read_csv(truth / "test_particles.csv")
    assert len(rows) and rows["EqDiameter"].between(150 - 1e-6, 400 + 1e-6).all()
    assert run([*args, *common, "--modes", "dic", "--density", "none"]) == 0
    coco = json.loads((out / "train" / "annotations.json").read_text())
    assert len(coco["images"]) == 2 and coco["annotations"] == []
