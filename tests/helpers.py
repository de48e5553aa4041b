"""Small helpers the tests share (argument lists, set-ups); no test lives here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def options_argv(**options: object) -> list[str]:
    """Command-line options from keywords, in the order given.

    ``n_train=2`` is ``--n-train 2``; ``resume=True`` is the flag ``--resume``.
    """
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def command_argv(*words: object, **options: object) -> list[str]:
    """The arguments of a ``micrometry`` command: ``words`` (command, then positionals), then ``options``.

    ``command_argv("particles", "measure", folder, pixel_size=0.5, out=csv)`` is
    ``["particles", "measure", "FOLDER", "--pixel-size", "0.5", "--out", "CSV"]``.
    """
    return [str(word) for word in words] + options_argv(**options)


def synth_particles_argv(out: str | Path, truth: str | Path, *extra: str, **options: object) -> list[str]:
    """The arguments of ``micrometry synth particles OUT --truth TRUTH`` with ``options``, then ``extra``."""
    return [*command_argv("synth", "particles", out, truth=truth, **options), *extra]


def particles_train_argv(data: str | Path, out: str | Path, **options: object) -> list[str]:
    """The arguments of ``micrometry particles train DATA --out OUT`` with ``options``."""
    return command_argv("particles", "train", data, out=out, **options)


def depth_predict_argv(
    images: str | Path, model: str | Path, out: str | Path, **options: object
) -> list[str]:
    """The arguments of ``micrometry depth predict IMAGES --model MODEL --out OUT`` with ``options``."""
    return command_argv("depth", "predict", images, model=model, out=out, **options)


#: ``depth train`` options of a tiny U-Net that trains in seconds
TINY_UNET_OPTIONS = ["--method", "unet", "--param", "width=4", "--param", "batch_size=16"]


def torchrun_micrometry(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """``micrometry ARGS`` launched by torchrun as two local processes (quiet, one thread each), its output captured."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "MICROMETRY_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*launcher, "-m", "micrometry", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def torchrun_failure(done: subprocess.CompletedProcess) -> str:
    """What a failed torchrun said: the ranks' own errors (the start of stderr) and the launcher's summary."""
    err = done.stderr
    return err if len(err) <= 4000 else err[:2000] + "\n[...]\n" + err[-2000:]


def one_error_line(capsys, expected: str) -> str:
    """The single ``error:`` line on stderr (and no traceback); it must contain ``expected``."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], err
    return lines[0]


def free_port() -> int:
    """A TCP port free on the loopback interface when asked (bind it soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app, attempts: int = 100) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a background thread; yields its URL.

    The URL comes once ``/api/health`` answers, or after ``attempts`` tries 50 ms apart.
    """
    import httpx
    import uvicorn

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(attempts):
        try:
            if httpx.get(url + "/api/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(timeout=5)
