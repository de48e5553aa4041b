"""Self-contained HTML reports shared by both jobs.

:class:`Report` builds the page; :mod:`micrometry.report.particles` and
:mod:`micrometry.report.depth` draw each job's figures; :mod:`micrometry.report.cli`
holds ``micrometry report``.
"""

from micrometry.report.html import Report

__all__ = ["Report"]
