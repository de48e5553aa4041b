"""Small helpers the tests share (argument lists, set-ups); no test lives here."""

from __future__ import annotations

from pathlib import Path


def synth_particles_argv(out: str | Path, truth: str | Path, *extra: str, **options: object) -> list[str]:
    """The arguments of ``micrometry synth particles OUT --truth TRUTH`` with ``options``, then ``extra``.

    Each keyword is an option in the order given: ``n_train=2`` is ``--n-train 2``.
    """
    argv = ["synth", "particles", str(out), "--truth", str(truth)]
    for name, value in options.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    return argv + list(extra)
