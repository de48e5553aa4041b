"""Self-contained HTML reports shared by both jobs.

:class:`Report` builds the page; :mod:`micrometry.report.particles` and
:mod:`micrometry.report.depth` draw each job's figures; :mod:`micrometry.report.cli`
holds ``micrometry report``.
"""

__all__ = ["Report"]


def __getattr__(name: str):
    # Lazy: importing matplotlib costs ~1 s, and the CLI imports this package at start-up.
    if name == "Report":
        from micrometry.report.html import Report

        return Report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
