import os

# Quiet progress bars and keep torch from spinning idle threads on 2 cores.
os.environ.setdefault("MICROMETRY_QUIET", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


@pytest.fixture
def cli():
    """Run the CLI in-process; returns (exit_code, stdout, stderr)."""
    from micrometry.cli import run

    def invoke(*args, capsys=None):
        return run([str(a) for a in args])

    return invoke
