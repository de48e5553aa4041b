"""The README stays a five-minute read: the two commands first, at most 150 lines, links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move details to docs/"
    top = "\n".join(lines[:6])
    assert "make demo" in top and "make test" in top


def test_readme_holds_no_benchmark_tables():
    """Measured figures live in docs/benchmarks.md and the per-job docs."""
    assert not [line for line in README.splitlines() if line.startswith("|")]
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for figure in ("24.645", "**4.143**", "**0.443**", "5,200-5,700 particles/s", "7 min 05 s"):
        assert figure in benchmarks


def test_readme_links_resolve():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local and all((ROOT / t).exists() for t in local), [t for t in local if not (ROOT / t).exists()]
