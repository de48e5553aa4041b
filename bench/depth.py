"""Benchmark every depth method on one synthetic dataset under the same training time budget.

    .venv/bin/python bench/depth.py [--budget 180] [--methods ae,unet,unet-weak[tta=2]] \
        [--n-structures 800 --n-sites 40 --images-per-site 25 --n-test 1000] [--data /tmp/micrometry-bench-depth]

Synthesises (once, cached under ``--data``) a dataset with a fixed seed: by
default 800 base structures (6,400 simulated SEM images), 40 real sites x 25
images and 1,000 test images. Trains each method with the shared loop for at
most ``--budget`` seconds (the method's own epoch count otherwise), predicts the
test images and prints one table: RMSE overall and per case, ratio to ``ae``,
training seconds, inference images/s (best of two passes over the test set).
A method name may carry parameters: ``unet-weak[ensemble=2,tta=2]``.

The machine is shared: timings vary with its load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from micrometry.depth.dataset import index_dataset, load_test  # noqa: E402
from micrometry.depth.evaluate import read_case_column, score  # noqa: E402
from micrometry.depth.methods import DepthData, create_method, load_method, method_names, train_method  # noqa: E402
from micrometry.io.image import read_gray_u8  # noqa: E402
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset  # noqa: E402
from micrometry.train import RunDir  # noqa: E402
from micrometry.train.loop import configure_threads  # noqa: E402

_SPEC = re.compile(r"^(?P<name>[\w-]+)(\[(?P<params>.*)\])?$")


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"unet[ensemble=2,tta=2]"`` -> ``("unet", {"ensemble": 2, "tta": 2})``."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise SystemExit(f"bad method spec {spec!r}")
    params = {}
    for pair in filter(None, (match["params"] or "").split(",")):
        key, _, value = pair.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return match["name"], params


def ensure_dataset(root: Path, config: SemSynthConfig) -> tuple[Path, Path]:
    """The dataset and truth folders for ``config``, synthesised unless already cached."""
    stamp = root / "config.json"
    wanted = json.dumps(config.to_dict(), sort_keys=True)
    if stamp.is_file() and stamp.read_text() == wanted:
        return root / "data", root / "truth"
    shutil.rmtree(root, ignore_errors=True)
    write_sem_dataset(root / "data", root / "truth", config)
    stamp.write_text(wanted)
    return root / "data", root / "truth"


def run_one(spec: str, data: DepthData, test_images: np.ndarray, truth: np.ndarray, case: np.ndarray,
            budget: float, seed: int, workdir: Path) -> dict:
    name, params = parse_spec(spec)
    method = create_method(name, **params)
    run = RunDir.for_training(workdir / spec.replace("[", "_").replace("]", "").replace(",", "_"), overwrite=True)
    started = time.perf_counter()
    metrics = train_method(method, data, run, time_budget_s=budget, seed=seed, device="cpu")
    train_s = time.perf_counter() - started
    run.close()
    trained = load_method(run.path, device="cpu")
    speeds = []
    for _ in range(2):
        t0 = time.perf_counter()
        pred = trained.predict(test_images)
        speeds.append(len(test_images) / (time.perf_counter() - t0))
    pred_u8 = np.clip(np.rint(pred), 0, 255).astype(np.uint8)  # what a submission PNG holds
    result = score(pred_u8, truth, case)
    if hasattr(trained, "predict_case"):  # case classifiers also report their accuracy
        result["case_accuracy"] = float((trained.predict_case(test_images) == case).mean())
    return {"method": spec, **result, "train_s": train_s, "images_per_s": max(speeds),
            "epochs": len(metrics.get("history", [])), "best": metrics.get("best", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=None, help="Comma-separated specs (default: every registered method).")
    parser.add_argument("--budget", type=float, default=180.0, help="Training seconds per method.")
    parser.add_argument("--n-structures", type=int, default=800)
    parser.add_argument("--n-sites", type=int, default=40)
    parser.add_argument("--images-per-site", type=int, default=25)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="Dataset and training seed.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "micrometry-bench-depth")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    os.environ.setdefault("MICROMETRY_QUIET", "1")
    configure_threads(args.threads)
    config = SemSynthConfig(seed=args.seed, n_structures=args.n_structures, n_sites=args.n_sites,
                            images_per_site=args.images_per_site, n_test=args.n_test)
    data_dir, truth_dir = ensure_dataset(args.data, config)
    index = index_dataset(data_dir)
    test = load_test(index)
    truth = np.stack([read_gray_u8(truth_dir / "test_depth" / n) for n in test.names])
    cases = read_case_column(truth_dir / "test_truth.csv")
    case = np.array([cases[n] for n in test.names])
    data = DepthData.load(data_dir, ("sim", "real"))

    specs = args.methods.split(";") if args.methods and ";" in args.methods else \
        re.split(r",(?![^\[]*\])", args.methods) if args.methods else method_names()
    console = Console(width=130)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-depth-") as tmp:
        for spec in specs:
            console.print(f"[bold]{spec}[/]: training (budget {args.budget:.0f} s)")
            results.append(run_one(spec, data, test.images, truth, case, args.budget, args.seed, Path(tmp)))
            r = results[-1]
            console.print(f"  rmse {r['rmse']:.3f}, train {r['train_s']:.0f} s, {r['images_per_s']:.0f} images/s"
                          + (f", case accuracy {r['case_accuracy']:.3f}" if "case_accuracy" in r else ""))

    ae = next((r["rmse"] for r in results if parse_spec(r["method"])[0] == "ae"), None)
    table = Table(title=f"Depth methods, {len(test.names)} test images, budget {args.budget:.0f} s "
                        f"({args.threads} threads, shared machine)")
    for col in ("method", "RMSE", "case 1", "case 2", "case 3", "case 4", "/ ae", "train s", "epochs", "images/s"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        per = [r["per_case"].get(str(c), {}).get("rmse", float("nan")) for c in range(1, 5)]
        table.add_row(r["method"], f"{r['rmse']:.3f}", *(f"{v:.3f}" for v in per),
                      f"{r['rmse'] / ae:.3f}" if ae else "-", f"{r['train_s']:.0f}", str(r["epochs"]),
                      f"{r['images_per_s']:.0f}")
    console.print(table)
    for r in results:
        if "case_accuracy" in r:
            console.print(f"{r['method']}: case accuracy on the test images {r['case_accuracy']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
