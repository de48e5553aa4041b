"""Images/s of depth prediction: one process vs a Ray actor pool.

    .venv/bin/python bench/scale.py [--images 3000] [--workers 2] [--batch-size 256] [--passes 2]
                                    [--method ae | --model RUN] [--data /tmp/micrometry-bench-scale]

Synthesises (once, cached under ``--data``) a dataset with ``--images`` test
images, trains ``--method`` (default: the default method) for one short epoch unless ``--model``
names a run folder (speed does not depend on how well it was trained), then
predicts the test folder end to end (read, predict, write PNGs), exactly as
``micrometry depth predict`` does:

- ``local``: this process, all cores (``--engine local``);
- ``ray``: a local Ray instance with ``--workers`` actors of one CPU each
  (``--engine ray --ray-workers N``); Ray's start-up is reported on its own
  line, the actor pool's start-up is part of every pass (as in every command)
  and shown alone by a pass over a single batch.

Prints one table (best of ``--passes`` passes). The machine may be shared:
timings vary with its load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MICROMETRY_QUIET", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from micrometry.depth.methods import DEFAULT_METHOD, DEPTH_METHODS, DepthData, load_depth_model, train_method  # noqa: E402
from micrometry.depth.predict import predict_folder  # noqa: E402
from micrometry.engine import LocalEngine, RayEngine  # noqa: E402
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset  # noqa: E402
from micrometry.train import RunDir  # noqa: E402
from micrometry.train.loop import configure_threads  # noqa: E402


def ensure_dataset(root: Path, n_images: int) -> Path:
    """A small training set and ``n_images`` test images, made once per size."""
    data = root / f"data-{n_images}"
    if not (data / "test" / "SEM").is_dir():
        shutil.rmtree(data, ignore_errors=True)
        write_sem_dataset(
            data,
            root / f"truth-{n_images}",
            SemSynthConfig(seed=0, n_structures=40, n_sites=4, images_per_site=4, n_test=n_images),
        )
    return data


def ensure_model(root: Path, data: Path, name: str) -> Path:
    """The method after one short epoch (enough to time inference)."""
    run_dir = root / f"run-{name}"
    if not (run_dir / "checkpoints" / "best.pt").is_file():
        method = DEPTH_METHODS.create(name)
        run = RunDir.for_training(run_dir, overwrite=True)
        train_method(method, DepthData.load(data, method.uses), run, epochs=1, time_budget_s=20)
        run.close()
    return run_dir


def time_passes(images: Path, method, engine, passes: int) -> float:
    """Best wall-clock seconds of ``passes`` full predictions of ``images``."""
    best = float("inf")
    for _ in range(passes):
        out = Path(tempfile.mkdtemp(prefix="scale-bench-")) / "pred"
        started = time.perf_counter()
        predict_folder(images, method, out, batch_size=engine.batch_size, engine=engine)
        best = min(best, time.perf_counter() - started)
        shutil.rmtree(out.parent)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--method", default=DEFAULT_METHOD, help="depth method to train briefly and time")
    parser.add_argument("--model", type=Path, default=None, help="a depth run folder (instead of --method)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "micrometry-bench-scale")
    args = parser.parse_args()

    configure_threads()
    data = ensure_dataset(args.data, args.images)
    images = data / "test" / "SEM"
    n = len(list(images.iterdir()))
    run_dir = args.model or ensure_model(args.data, data, args.method)
    method = load_depth_model(run_dir, device="cpu")

    rows = [("local", "1 process", time_passes(images, method, LocalEngine(args.batch_size), args.passes))]

    import ray

    started = time.perf_counter()
    ray.init(
        num_cpus=max(args.workers, os.cpu_count() or 1),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    ray_start = time.perf_counter() - started
    engine = RayEngine(args.batch_size, workers=args.workers)
    rows.append(("ray", f"{args.workers} actors", time_passes(images, method, engine, args.passes)))
    # the fixed cost of a command: starting the actor pool (and one batch)
    one_batch = Path(tempfile.mkdtemp(prefix="scale-bench-batch-"))
    for path in sorted(images.iterdir())[: args.batch_size]:
        shutil.copy(path, one_batch / path.name)
    fixed = time_passes(one_batch, method, engine, args.passes)
    shutil.rmtree(one_batch)
    ray.shutdown()

    table = Table(
        title=f"depth predict, {n} images of 72x48, method {method.name}, batch {args.batch_size}, "
        f"{os.cpu_count()} CPU cores (best of {args.passes})"
    )
    for col in ("engine", "workers", "seconds", "images/s"):
        table.add_column(col, justify="left" if col in ("engine", "workers") else "right")
    for engine_name, workers, seconds in rows:
        table.add_row(engine_name, workers, f"{seconds:.2f}", f"{n / seconds:.0f}")
    table.add_row("ray, 1 batch only", f"{args.workers} actors", f"{fixed:.2f}", "(actor pool start)")
    table.add_row("ray start-up", "(once per command)", f"{ray_start:.2f}", "")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
