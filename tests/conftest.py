import os

# Quiet progress bars and keep torch from spinning idle threads on 2 cores.
os.environ.setdefault("MICROMETRY_QUIET", "1")

import pytest  # noqa: E402

import micrometry  # noqa: E402, F401  (sets OMP_WAIT_POLICY before any test module imports torch)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test (or a command it runs in-process) that sets torch's thread count sets it for itself only."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``trained_run(model)``: a run folder of ``model`` trained briefly on synthetic scenes.

    Each model trains once per test session, in pytest's temporary folder (removed with
    pytest's other old temporary folders). Tests must not modify the run: copy it first.
    """
    from particle_scenes import train_tiny_run

    runs: dict[str, object] = {}

    def get(model: str):
        if model not in runs:
            runs[model] = train_tiny_run(tmp_path_factory.mktemp(f"run-{model}"), model)
        return runs[model]

    return get
