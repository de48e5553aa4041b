"""Sample data for the page's "Try sample data" buttons, made on first use by the project's own generators.

Nothing is shipped or downloaded: the same seeded generators as ``micrometry
synth`` give the same images every time, encoded as PNG like an upload.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

SEM_SEED, PARTICLE_SEED, FRAME_SEED = 2022, 7, 27
PARTICLE_SHAPE = (480, 640)  # small photos: the sample runs in seconds on one core


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@lru_cache(maxsize=1)
def sem_samples() -> tuple[tuple[str, bytes], ...]:
    """Eight synthetic 72x48 SEM images, two from a site of each nominal depth (110..140 nm)."""
    from micrometry.synth.sem_dataset import SemSynthConfig, simulate_real

    real = simulate_real(
        SemSynthConfig(seed=SEM_SEED), n_sites=4, per_site=2, rng=np.random.default_rng(SEM_SEED)
    )
    return tuple(
        (f"sample_{int(nominal)}nm_site{int(site) + 1}_{i % 2 + 1}.png", _png(image))
        for i, (image, nominal, site) in enumerate(zip(real.images, real.nominal, real.site, strict=False))
    )


@lru_cache(maxsize=1)
def particle_samples() -> tuple[tuple[str, bytes], ...]:
    """Two synthetic particle photos of the same suspension."""
    from micrometry.synth.particle_scene import SuspensionParams, render_image

    params = SuspensionParams(height=PARTICLE_SHAPE[0], width=PARTICLE_SHAPE[1])
    rng = np.random.default_rng(PARTICLE_SEED)
    return tuple((f"sample_particles_{k + 1}.png", _png(render_image(params, rng).image)) for k in range(2))


@lru_cache(maxsize=1)
def frame_samples() -> tuple[tuple[str, bytes], ...]:
    """One synthetic 432x576 CD-SEM frame of a hole array, with a few defect holes."""
    from micrometry.synth.sem_frames import FrameConfig, render_frame

    config = FrameConfig(height_px=432, width_px=576, n_under_etched=2, n_not_open=2, n_merged=1, n_missing=1)
    frame = render_frame(config, np.random.default_rng(FRAME_SEED))
    return (("sample_frame.png", _png(frame.image)),)
