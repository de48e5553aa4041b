"""Benchmark every depth method on one synthetic dataset under the same training time budget.

    .venv/bin/python bench/depth.py [--budget 180] [--methods ae,unet,unet-weak[tta=2]] \
        [--n-structures 800 --n-sites 40 --images-per-site 25 --n-test 1000] [--data /tmp/micrometry-bench-depth]

Synthesises (once, cached under ``--data``) a dataset with a fixed seed: by
default 800 base structures (6,400 simulated SEM images), 40 real sites x 25
images and 1,000 test images. Trains each method with the shared loop for at
most ``--budget`` seconds (the method's own epoch count otherwise), predicts the
test images and prints one table: RMSE overall and per case, ratio to ``ae``,
training seconds, inference images/s (best of two passes over the test set).
A method name may carry parameters: ``unet-weak[ensemble=2,tta=2]``. A spec
``pixel-labels:METHOD`` is the reference no user can train: METHOD trained on the
simulated pairs *plus every real training image with its true depth map*
(``TRUTH/train_depth``), the labels the weak supervision stands in for; its pairs hold the real
holes' shapes, so it never warps them (``geometry=fixed``).
``--trained LABEL=RUN`` scores a run trained earlier instead, with ``--set KEY=VALUE,...``
(e.g. ``tta=2,fill_dips=0``) changing how it predicts.

The machine is shared: timings vary with its load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from micrometry.config import make_config  # noqa: E402
from micrometry.depth.dataset import SimArrays, index_dataset, load_test  # noqa: E402
from micrometry.depth.evaluate import read_case_column, score  # noqa: E402
from micrometry.depth.methods import DEPTH_METHODS, DepthData, load_depth_model, train_method  # noqa: E402
from micrometry.io.image import read_gray_u8  # noqa: E402
from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset  # noqa: E402
from micrometry.synth.sem_geometry import GeometryConfig  # noqa: E402
from micrometry.synth.sem_physics import RealDomain, SemPhysics  # noqa: E402
from micrometry.train import RunDir  # noqa: E402
from micrometry.train.loop import configure_threads  # noqa: E402

#: Spec prefix of the pixel-label reference (see the module docstring).
PIXEL_LABELS = "pixel-labels:"

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


VARIANTS = ("default", "other", "geometry")


def variant_config(variant: str, **sizes) -> SemSynthConfig:
    """The bench's data set: ``default`` (the generator's defaults) or ``other``.

    ``geometry`` keeps the default tool and simulator but gives the real holes shapes outside
    the simulation's geometry prior (:func:`shifted_geometry`): what site averages cannot teach.

    ``other`` stands for another tool and another simulator: every physics and
    real-domain knob moved well away from the defaults (steeper yield law, weaker
    escape length, stronger shadowing; a blurrier, more astigmatic, noisier real
    probe with three times the charging and more jitter, other gain and offset),
    more tapered, smaller and rounder holes. No method default was tuned on it.
    """
    if variant == "default":
        return SemSynthConfig(**sizes)
    if variant == "geometry":
        return SemSynthConfig(**sizes, real_geometry=shifted_geometry())
    if variant != "other":
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    physics = SemPhysics(
        tilt_exponent=1.2,
        max_tilt_deg=75.0,
        edge_glow=1.1,
        edge_sigma_px=1.1,
        escape_length_nm=45.0,
        shadow=0.55,
        shadow_sigma_px=5.0,
        psf_sigma=(0.8, 0.7),
        dose=45.0,
        read_noise=0.04,
        gain=70.0,
        offset=25.0,
    )
    real = RealDomain(
        psf_sigma=(1.6, 1.1),
        dose=18.0,
        site_gain_sd=0.006,
        site_offset_sd=0.6,
        charging=0.09,
        line_jitter_px=0.55,
        escape_length_scale=0.9,
        gain=62.0,
        offset=38.0,
    )
    geometry = GeometryConfig(
        semi_axis_x=(13.0, 1.4),
        semi_axis_y=(18.5, 1.8),
        taper=(0.3, 0.7),
        bottom_rounding=(0.0, 0.2),
        roughness=(0.0, 0.08),
        pitch=(46.0, 69.0),
        neighbour_jitter=2.0,
    )
    real_geometry = GeometryConfig(
        semi_axis_x=(12.6, 0.5),
        semi_axis_y=(18.0, 0.7),
        family_growth=0.0,
        centre_jitter=1.8,
        taper=(0.36, 0.5),
        bottom_rounding=(0.08, 0.18),
        roughness=(0.03, 0.09),
        neighbour_probability=1.0,
        pitch=(44.0, 66.0),
        neighbour_jitter=0.4,
    )
    return SemSynthConfig(**sizes, physics=physics, real=real, geometry=geometry, real_geometry=real_geometry)


def shifted_geometry() -> GeometryConfig:
    """Real holes outside the simulation's geometry prior (``GeometryConfig()``): more tapered
    (bottom-to-top radius ratio 0.28-0.40 against 0.45-0.75), a rounder bottom (0.14-0.24 of the
    depth against 0-0.12) and smaller openings (semi-axes 11.8 x 16.8 px, 1.8 and 2 simulated SDs
    below the simulation's mean), on the default pitch and tool."""
    return GeometryConfig(
        semi_axis_x=(11.8, 0.45),
        semi_axis_y=(16.8, 0.65),
        family_growth=0.0,
        centre_jitter=1.4,
        taper=(0.28, 0.40),
        bottom_rounding=(0.14, 0.24),
        roughness=(0.02, 0.08),
        neighbour_probability=1.0,
        neighbour_jitter=0.3,
    )


def default_cache(variant: str) -> Path:
    """Where the bench keeps a variant's data set unless ``--data`` says otherwise."""
    return Path(tempfile.gettempdir()) / (
        "micrometry-bench-depth" + ("" if variant == "default" else f"-{variant}")
    )


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


def level_shape(pred: np.ndarray, truth: np.ndarray, case: np.ndarray, bottom: float = 30.0) -> dict:
    """RMSE of the predicted depth level and of the predicted shape, overall and per case.

    A map is ``bottom + D * s`` (etch depth ``D`` = top level - bottom, shape ``s``
    in [0, 1]). *level*: the true shape at the predicted depth; *shape*: the
    predicted shape at the true depth; both against the true map.
    """
    pred = pred.astype(np.float64)
    truth = truth.astype(np.float64)
    d_pred = pred.reshape(len(pred), -1).max(1) - bottom
    d_true = truth.reshape(len(truth), -1).max(1) - bottom
    s_pred = (pred - bottom) / np.maximum(d_pred, 1.0)[:, None, None]
    s_true = (truth - bottom) / np.maximum(d_true, 1.0)[:, None, None]
    level = (d_pred - d_true)[:, None, None] * s_true
    shape = d_true[:, None, None] * (s_pred - s_true)
    out = {
        "level": float(np.sqrt(np.mean(level**2))),
        "shape": float(np.sqrt(np.mean(shape**2))),
        "level_bias": float(np.mean(d_pred - d_true)),
        "per_case": {},
    }
    for c in np.unique(case):
        rows = case == c
        out["per_case"][str(int(c))] = {
            "level": float(np.sqrt(np.mean(level[rows] ** 2))),
            "shape": float(np.sqrt(np.mean(shape[rows] ** 2))),
            "level_bias": float(np.mean(d_pred[rows] - d_true[rows])),
        }
    return out


def with_pixel_labels(data: DepthData, truth_dir: Path) -> DepthData:
    """``data`` whose simulated pairs also hold every real training image with its true depth map
    (``TRUTH/train_depth``; both render slots hold the one real image)."""
    real, sim = data.real, data.sim
    maps = np.stack(
        [read_gray_u8(truth_dir / "train_depth" / Path(name).relative_to("train/SEM")) for name in real.names]
    )
    pairs = SimArrays(
        sem=np.concatenate([sim.sem, np.repeat(real.images[:, None], 2, axis=1)]),
        depth=np.concatenate([sim.depth, maps]),
        case=np.concatenate([sim.case, real.case]),
        base=np.concatenate([sim.base.astype(str), [f"real-site-{s}" for s in real.site]]),
    )
    return DepthData(sim=pairs, real=real)


def read_hole_depths(truth_csv: Path) -> dict[str, float]:
    """``file -> true hole depth (nm)`` from a synth ``test_truth.csv``."""
    with open(truth_csv, newline="") as f:
        return {row["file"]: float(row["hole_depth"]) for row in csv.DictReader(f)}


def report_checks(trained, test_images: np.ndarray, hole_depth: np.ndarray, foreign: dict) -> dict:
    """Coverage of the stated 90 % interval of each hole's depth, and the share of images flagged
    as unlike the training data: on the test images and on ``foreign`` (name -> (images, truth))."""
    if not hasattr(trained, "predict_report"):
        return {}
    _, report = trained.predict_report(test_images)
    if report is None:
        return {}
    inside = (report["depth_low_nm"] <= hole_depth) & (hole_depth <= report["depth_high_nm"])
    out = {
        "coverage90": float(inside.mean()),
        "halfwidth_nm": float(np.nanmean(report["depth_high_nm"] - report["depth_nm"])),
        "depth_mae_nm": float(np.abs(report["depth_nm"] - hole_depth).mean()),
        "ood_rate": float(report["ood"].mean()),
        "ood_score_median": float(np.median(report["ood_score"])),
    }
    for name, (images, truth) in foreign.items():
        maps, rep = trained.predict_report(images)
        if truth is not None:
            pred_u8 = np.clip(np.rint(maps), 0, 255).astype(np.float64)
            out[f"{name}_rmse"] = float(np.sqrt(np.mean((pred_u8 - truth) ** 2)))
        out[f"{name}_ood_rate"] = float(rep["ood"].mean())
        out[f"{name}_ood_score_median"] = float(np.median(rep["ood_score"]))
    return out


def foreign_images(test_images: np.ndarray, other: tuple[np.ndarray, np.ndarray] | None) -> dict:
    """Images the model was not trained for: the other data set's test images (if cached) and
    the test images at 1.5x magnification (centre crop resized) and with a dust particle."""
    import cv2

    out = {}
    if other is not None:
        out["other_set"] = other
    sub = test_images[:200]
    zoom = np.stack([cv2.resize(im[12:60, 8:40], (48, 72), interpolation=cv2.INTER_LINEAR) for im in sub])
    out["zoom1.5"] = (zoom, None)
    dust = sub.copy()
    yy, xx = np.mgrid[0:72, 0:48]
    dust[:, (yy - 30) ** 2 + (xx - 20) ** 2 < 36] = 250  # a bright particle on the hole
    out["dust"] = (dust, None)
    return out


def images_per_second(trained, images: np.ndarray, threads: tuple[int, ...]) -> dict[str, float]:
    """The model's own speed (no file reading or writing): best of 3 passes per thread count."""
    import torch

    before = torch.get_num_threads()
    out = {}
    for t in threads:
        torch.set_num_threads(t)
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            trained.predict(images)
            best = max(best, len(images) / (time.perf_counter() - t0))
        out[str(t)] = best
    torch.set_num_threads(before)
    return out


def _timed(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, done.stderr


def imported(importtime_log: str) -> set[str]:
    """Module names in a ``python -X importtime`` log."""
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in importtime_log.splitlines()
        if line.startswith("import time:")
    }


def startup_figures(model: Path, images: np.ndarray, workdir: Path) -> dict[str, str]:
    """Wall time of ``micrometry --help`` and of ``depth predict`` on 10 images (best of 3), and the
    heavy or unrelated modules each imports."""
    import sys

    from micrometry.io.image import write_image

    folder = workdir / "ten"
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(images):
        write_image(folder / f"{i:02d}.png", image)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    watch = (
        "torch",
        "numpy",
        "scipy",
        "cv2",
        "skimage",
        "pandas",
        "ray",
        "fastapi",
        "pycocotools",
        "micrometry.particles.models",
        "micrometry.depth.methods.lookup",
        "micrometry.web.app",
    )
    out = {}
    for label, args in (
        ("--help", ["--help"]),
        (
            "depth predict (10 images)",
            [
                "depth",
                "predict",
                str(folder),
                "--model",
                str(model),
                "--out",
                str(workdir / "ten-out"),
                "--overwrite",
                "--threads",
                "1",
            ],
        ),
    ):
        best = min(_timed([sys.executable, "-m", "micrometry", *args], env)[0] for _ in range(3))
        _, log = _timed([sys.executable, "-X", "importtime", "-m", "micrometry", *args], env)
        heavy = [m for m in watch if m in imported(log)]
        out[label] = f"{best:.2f} s (imports {', '.join(heavy) or 'none of ' + ', '.join(watch[:3])})"
    out["python -c 'import torch'"] = (
        f"{min(_timed([sys.executable, '-c', 'import torch'], env)[0] for _ in range(3)):.2f} s"
    )
    return out


def run_one(
    spec: str,
    data: DepthData,
    test_images: np.ndarray,
    truth: np.ndarray,
    case: np.ndarray,
    budget: float,
    seed: int,
    workdir: Path,
    hole_depth: np.ndarray | None = None,
    foreign: dict | None = None,
    speed: bool = False,
    startup: bool = False,
    trained_run: Path | None = None,
    predict_with: dict | None = None,
) -> dict:
    if trained_run is None:
        name, params = parse_spec(spec.removeprefix(PIXEL_LABELS))
        if (
            spec.startswith(PIXEL_LABELS)
            and "geometry" in DEPTH_METHODS.get(name).Config.__dataclass_fields__
        ):
            # its pairs hold the real holes' shapes themselves: no warps (the reference of 6-7 Dec)
            params.setdefault("geometry", "fixed")
        method = DEPTH_METHODS.create(name, **params)
        run = RunDir.for_training(workdir / re.sub(r"[\[\],:=]", "_", spec), overwrite=True)
        started = time.perf_counter()
        metrics = train_method(method, data, run, time_budget_s=budget, seed=seed, device="cpu")
        train_s = time.perf_counter() - started
        run.close()
    else:  # a run trained earlier (e.g. by `micrometry depth train` on this data set): evaluate only
        run = RunDir.existing(trained_run)
        metrics = run.read_metrics()
        train_s = float(metrics.get("history", [{}])[-1].get("elapsed_s", float("nan")))
    trained = load_depth_model(run.path, device="cpu")
    if predict_with and trained_run is not None:  # prediction-time settings (tta, fill_dips), checked
        trained.cfg = make_config(type(trained.cfg), {**trained.cfg.to_dict(), **predict_with}, spec)
    speeds = []
    for _ in range(2):
        t0 = time.perf_counter()
        pred = trained.predict(test_images)
        speeds.append(len(test_images) / (time.perf_counter() - t0))
    pred_u8 = np.clip(np.rint(pred), 0, 255).astype(np.uint8)  # what a submission PNG holds
    result = score(pred_u8, truth, case)
    result["parts"] = level_shape(pred_u8, truth, case)
    if hole_depth is not None:
        result.update(report_checks(trained, test_images, hole_depth, foreign or {}))
    if speed:
        result["images_per_s_by_threads"] = images_per_second(trained, test_images, (1, 2))
    if startup:
        result["startup"] = startup_figures(run.path, test_images[:10], workdir)
    if hasattr(trained, "predict_case"):  # case classifiers also report their accuracy
        result["case_accuracy"] = float((trained.predict_case(test_images) == case).mean())
    return {
        "method": spec,
        **result,
        "budget": budget,
        "train_s": train_s,
        "images_per_s": max(speeds),
        "epochs": len(metrics.get("history", [])),
        "best": metrics.get("best", {}),
    }


def print_table(results: list[dict], console: Console, budget: float, n_test: int, threads: int) -> None:
    ae = next((r["rmse"] for r in results if r["method"].split("[")[0] == "ae"), None)
    table = Table(
        title=f"Depth methods, {n_test} test images, training budget {budget:.0f} s "
        f"({threads} thread(s), shared machine)"
    )
    for col in (
        "method",
        "RMSE",
        "case 1",
        "case 2",
        "case 3",
        "case 4",
        "/ ae",
        "train s",
        "epochs",
        "images/s",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        per = [r["per_case"].get(str(c), {}).get("rmse", float("nan")) for c in range(1, 5)]
        table.add_row(
            r["method"],
            f"{r['rmse']:.3f}",
            *(f"{v:.3f}" for v in per),
            f"{r['rmse'] / ae:.3f}" if ae else "-",
            f"{r['train_s']:.0f}",
            str(r["epochs"]),
            f"{r['images_per_s']:.0f}",
        )
    console.print(table)
    parts = Table(
        title="Level and shape parts of the RMSE (nm; level bias = mean predicted - true depth), "
        "90 % interval of each hole's depth, share of images flagged as unlike the training data"
    )
    for col in (
        "method",
        "level",
        "shape",
        "bias",
        "level/shape c1",
        "c2",
        "c3",
        "c4",
        "cover 90",
        "+-nm",
        "OOD test",
        "OOD other set",
        "other RMSE",
        "OOD zoom",
        "OOD dust",
    ):
        parts.add_column(col, justify="left" if col == "method" else "right")
    fmt = lambda r, k, f="{:.3f}": f.format(r[k]) if k in r else "-"  # noqa: E731
    for r in results:
        p = r.get("parts")
        if not p:
            continue
        per = [
            f"{p['per_case'][c]['level']:.2f}/{p['per_case'][c]['shape']:.2f}" if c in p["per_case"] else "-"
            for c in ("1", "2", "3", "4")
        ]
        parts.add_row(
            r["method"],
            f"{p['level']:.3f}",
            f"{p['shape']:.3f}",
            f"{p['level_bias']:+.2f}",
            *per,
            fmt(r, "coverage90"),
            fmt(r, "halfwidth_nm", "{:.2f}"),
            fmt(r, "ood_rate"),
            fmt(r, "other_set_ood_rate"),
            fmt(r, "other_set_rmse", "{:.2f}"),
            fmt(r, "zoom1.5_ood_rate"),
            fmt(r, "dust_ood_rate"),
        )
    console.print(parts)
    for r in results:
        if "images_per_s_by_threads" in r:
            console.print(
                f"{r['method']}: model alone, best of 3 passes over the test images: "
                + ", ".join(
                    f"{v:.0f} images/s with {t} thread(s)" for t, v in r["images_per_s_by_threads"].items()
                )
            )
        if "startup" in r:
            console.print("CLI start-up: " + ", ".join(f"{k} {v}" for k, v in r["startup"].items()))
    for r in results:
        if "case_accuracy" in r:
            console.print(f"{r['method']}: case accuracy on the test images {r['case_accuracy']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--methods", default=None, help="Comma-separated specs (default: every registered method)."
    )
    parser.add_argument("--budget", type=float, default=180.0, help="Training seconds per method.")
    parser.add_argument("--n-structures", type=int, default=800)
    parser.add_argument("--n-sites", type=int, default=40)
    parser.add_argument("--images-per-site", type=int, default=25)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="Dataset and training seed.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="default",
        help="Data set: the generator's defaults, 'other' (another tool and simulator) or 'geometry' "
        "(real hole shapes outside the simulation's prior).",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="Dataset cache (default: micrometry-bench-depth[-VARIANT] in the temp folder).",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument(
        "--trained",
        nargs="+",
        default=[],
        metavar="SPEC=RUN",
        help="Evaluate runs trained earlier on this data set instead of training (label=run folder).",
    )
    parser.add_argument(
        "--tta",
        type=int,
        choices=(1, 2, 4),
        default=None,
        help="With --trained: predict with this many test-time flips instead of the run's own "
        "(the calibration stays the one fitted with the run's own).",
    )
    parser.add_argument(
        "--set",
        default="",
        metavar="KEY=VALUE,...",
        help="With --trained: predict with these settings instead of the run's own, e.g. fill_dips=0.1 "
        "(the calibration stays the one fitted with the run's own).",
    )
    parser.add_argument(
        "--speed",
        action="store_true",
        help="Also time each model alone with 1 and 2 threads (best of 3 passes).",
    )
    parser.add_argument(
        "--startup",
        action="store_true",
        help="Also time `micrometry --help` and `depth predict` on 10 images (first method's model).",
    )
    parser.add_argument(
        "--table-from",
        type=Path,
        nargs="+",
        default=None,
        help="Only print the table of earlier --json results (e.g. of runs made side by side).",
    )
    args = parser.parse_args()
    if args.table_from:
        results = [r for path in args.table_from for r in json.loads(path.read_text())]
        print_table(
            results,
            Console(width=130),
            results[0].get("budget", args.budget),
            results[0]["images"],
            args.threads,
        )
        return

    os.environ.setdefault("MICROMETRY_QUIET", "1")
    configure_threads(args.threads)
    config = variant_config(
        args.variant,
        seed=args.seed,
        n_structures=args.n_structures,
        n_sites=args.n_sites,
        images_per_site=args.images_per_site,
        n_test=args.n_test,
    )
    cache = args.data or default_cache(args.variant)
    data_dir, truth_dir = ensure_dataset(cache, config)
    index = index_dataset(data_dir)
    test = load_test(index)
    truth = np.stack([read_gray_u8(truth_dir / "test_depth" / n) for n in test.names])
    cases = read_case_column(truth_dir / "test_truth.csv")
    case = np.array([cases[n] for n in test.names])
    data = DepthData.load(data_dir, ("sim", "real"))
    holes = read_hole_depths(truth_dir / "test_truth.csv")
    hole_depth = np.array([holes[n] for n in test.names])
    other_variant = "other" if args.variant == "default" else "default"
    other_root = default_cache(other_variant)
    other = None
    if args.data is None and (other_root / "config.json").is_file():  # cached by a run with --variant OTHER
        other_test = load_test(index_dataset(other_root / "data"))
        other = (
            other_test.images,
            np.stack(
                [read_gray_u8(other_root / "truth" / "test_depth" / n) for n in other_test.names]
            ).astype(np.float64),
        )
    foreign = foreign_images(test.images, other)

    specs = (
        args.methods.split(";")
        if args.methods and ";" in args.methods
        else re.split(r",(?![^\[]*\])", args.methods)
        if args.methods
        else []
        if args.trained
        else DEPTH_METHODS.list()
    )
    trained_runs = dict(item.rsplit("=", 1) for item in args.trained)  # labels may hold "="
    specs = specs + list(trained_runs)
    console = Console(width=180)
    results = []
    labelled = None  # the pixel-label reference's data, built when a spec asks for it
    with tempfile.TemporaryDirectory(prefix="bench-depth-") as tmp:
        for spec in specs:
            if spec.startswith(PIXEL_LABELS) and labelled is None:
                labelled = with_pixel_labels(data, truth_dir)
            console.print(
                f"[bold]{spec}[/]: "
                + (
                    "evaluating " + trained_runs[spec]
                    if spec in trained_runs
                    else f"training (budget {args.budget:.0f} s)"
                )
            )
            results.append(
                run_one(
                    spec,
                    labelled if spec.startswith(PIXEL_LABELS) else data,
                    test.images,
                    truth,
                    case,
                    args.budget,
                    args.seed,
                    Path(tmp),
                    hole_depth,
                    foreign,
                    speed=args.speed,
                    startup=args.startup and not results,
                    trained_run=Path(trained_runs[spec]) if spec in trained_runs else None,
                    predict_with={
                        **({"tta": args.tta} if args.tta else {}),
                        **(parse_spec(f"x[{args.set}]")[1] if args.set else {}),
                    },
                )
            )
            r = results[-1]
            console.print(
                f"  rmse {r['rmse']:.3f}, train {r['train_s']:.0f} s, {r['images_per_s']:.0f} images/s"
                + (f", case accuracy {r['case_accuracy']:.3f}" if "case_accuracy" in r else "")
            )

    print_table(results, console, args.budget, len(test.names), args.threads)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
