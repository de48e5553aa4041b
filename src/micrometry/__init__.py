"""micrometry: turn microscope images into measurements.

Two jobs share one toolkit:

* depth from top-down SEM images of etched contact holes (``micrometry.depth``),
* particle instance segmentation and morphometry (``micrometry.particles``).

Shared pieces live once: image I/O (``micrometry.io``), synthetic data
(``micrometry.synth``), the training loop and run folders (``micrometry.train``)
and HTML reports (``micrometry.report``).

The Python API (:mod:`micrometry.api`) is available from the package itself::

    import micrometry as mm
    seg = mm.load_model("shipped").segment(image)
    table = mm.measure(seg.labels, pixel_size=0.5, unit="um")
"""

import os

# The one place this is set: before anything imports torch (every entry point imports this package
# first), idle OpenMP threads must sleep, not spin: on a few shared cores spinning threads cost
# more than they save (micrometry.options, --threads). A value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# The API's names, imported on first use: `import micrometry` (and the CLI's start) stays fast.
_API_NAMES = (
    "DepthModel",
    "Segmentation",
    "SegmentationModel",
    "compare",
    "hole_metrology",
    "load_depth_model",
    "load_model",
    "measure",
    "read_scale_bar",
    "size_distribution",
)

__all__ = ["__version__", *_API_NAMES]


def __getattr__(name: str):
    if name in _API_NAMES:
        from micrometry import api

        return getattr(api, name)
    raise AttributeError(f"module 'micrometry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API_NAMES})
