"""The particle generator's public names, in one place (the code lives in the ``particle_*`` modules).

* :mod:`.particle_shapes`: population knobs, outlines of the shape families, true descriptors;
* :mod:`.particle_optics`: imaging modes, optics and distractor knobs, rendering, noise;
* :mod:`.particle_scene`: one image: :class:`SuspensionParams`, placement, :func:`render_image`, its truth;
* :mod:`.particle_dataset`: datasets on disk (:func:`generate_dataset`) and the command line's presets.

Kept so that ``from micrometry.synth.particles import ...`` keeps working for callers written
before the split.
"""

from micrometry.synth.particle_dataset import (
    BATCH_POPULATIONS,
    DENSITIES,
    NOISE_LEVELS,
    batch_params,
    generate_dataset,
    with_options,
    write_split,
)
from micrometry.synth.particle_optics import MODES, DistractorParams, ImagingParams, OpticsParams, Particle
from micrometry.synth.particle_scene import (
    RenderedImage,
    SuspensionParams,
    image_rng,
    render_image,
    sample_particles,
    sample_sizes,
)
from micrometry.synth.particle_shapes import SHAPES, PopulationParams, polygon_descriptors, sample_diameters

__all__ = [
    "BATCH_POPULATIONS", "DENSITIES", "MODES", "NOISE_LEVELS", "SHAPES", "DistractorParams", "ImagingParams",
    "OpticsParams", "Particle", "PopulationParams", "RenderedImage", "SuspensionParams", "batch_params",
    "generate_dataset", "image_rng", "polygon_descriptors", "render_image", "sample_diameters", "sample_particles",
    "sample_sizes", "with_options", "write_split",
]
