"""micrometry: turn microscope images into measurements.

Two jobs share one toolkit:

* depth from top-down SEM images of etched contact holes (``micrometry.depth``),
* particle instance segmentation and morphometry (``micrometry.particles``).

Shared pieces live once: image I/O (``micrometry.io``), synthetic data
(``micrometry.synth``), the training loop and run folders (``micrometry.train``)
and HTML reports (``micrometry.report``).
"""

__version__ = "0.1.0"
