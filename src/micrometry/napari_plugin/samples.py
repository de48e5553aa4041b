"""Sample data: one synthetic photo per imaging mode (:mod:`micrometry.synth`), 512 x 640 px.

Each is the same kind of image ``micrometry synth particles`` writes (seeded, so a
sample is the same every time), and the shipped model segments all of them.
"""

from __future__ import annotations

import numpy as np

SAMPLE_SHAPE = (512, 640)


def sample(mode: str, seed: int = 0) -> list[tuple[np.ndarray, dict, str]]:
    """One synthetic photo in imaging ``mode`` as an image layer named after the mode."""
    from micrometry.synth.particle_scene import SuspensionParams, image_rng, render_image

    params = SuspensionParams(height=SAMPLE_SHAPE[0], width=SAMPLE_SHAPE[1], modes=(mode,))
    rendered = render_image(params, image_rng(seed, "napari", 0), mode)
    return [(rendered.image, {"name": f"synthetic {mode}"}, "image")]


def brightfield():
    return sample("brightfield")


def low_contrast():
    return sample("low-contrast")


def uneven():
    return sample("uneven")


def phase():
    return sample("phase")


def phase_negative():
    return sample("phase-negative")


def fluorescence():
    return sample("fluorescence")


def darkfield():
    return sample("darkfield")
