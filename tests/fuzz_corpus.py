"""Hostile and clumsy inputs for every command, and the contract each run must keep.

A *case* is one command line plus the files it reads, built in a fresh folder
from a small set of valid inputs (:class:`Seeds`) by one of four generators:

- ``image``: malformed PNG/TIFF files (truncated, bytes flipped, headers that
  claim 20000x20000 pixels with a valid CRC, text, empty, wrong size, 16-bit,
  colour) given to the commands that read images;
- ``coco``: random mutations of a valid COCO file or results file (a value
  replaced by a hostile one: ``[1]``, ``null``, ``1e308``, ``NaN``, a polygon
  reaching 4e8 px, width 1e9; a key deleted; a record duplicated);
- ``model``: hostile and broken model files (pickles that run ``os.system``,
  inside torch's zip container or bare, random bytes, truncated, the other
  job's checkpoint, broken ``config.json``) given to predict and ``--resume``;
- ``options``: random values (NaN, inf, -1, 0, huge, text, unwritable paths) for
  the options of every command.

:func:`run_case` runs a case in a forked child (no re-import: a case costs
milliseconds, not a Python start-up) under ``RLIMIT_AS`` and checks the
contract: exit code 0 or 2, no traceback on stderr, no temporary or partial
output left, every output complete or absent, no code run from a model file.
``tests/test_fuzz.py`` runs a few hundred cases; ``bench/fuzz.py N`` many more.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import shutil
import signal
import struct
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers import TINY_UNET_OPTIONS  # the depth method the fuzz trains and predicts with

KINDS = ("image", "coco", "model", "options")

# The memory bound a case runs under (address space: what RLIMIT_AS limits), on top of what the
# forked child inherits from its runner (a long pytest session holds gigabytes of address space).
MEMORY_LIMIT_BYTES = 3 * 1024**3


def address_space_bytes() -> int:
    """This process's virtual memory size (``VmSize``), 0 where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------- seeds


@dataclass
class Seeds:
    """Valid inputs the generators start from, built once per fuzz run in ``root``."""

    root: Path
    sem: Path  # a tiny SEM dataset (synth sem layout)
    sem_images: list[Path]  # valid 72x48 PNGs
    depth_maps: Path  # folder of depth PNGs
    coco: Path  # COCO folder: annotations.json + images/
    results: Path  # a valid COCO results file for coco
    labels: Path  # folder of 16-bit label PNGs
    table: Path  # a particle table (csv) for compare
    depth_run: Path  # a finished depth run folder
    particle_run: Path  # a run folder of a particle model (config.json + checkpoint)


def build_seeds(root: Path) -> Seeds:
    """Write the valid inputs (a few seconds, no training); everything later copies from them."""
    from micrometry.cli import run
    from micrometry.io.atomic import write_json
    from micrometry.io.image import write_image
    from micrometry.synth.sem_dataset import SemSynthConfig, write_sem_dataset

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_sem_dataset(
        root / "sem",
        root / "sem_truth",
        SemSynthConfig(seed=1, n_structures=2, n_sites=2, images_per_site=2, n_test=3),
    )
    sem_images = sorted((root / "sem" / "test" / "SEM").glob("*.png"))
    depth_maps = root / "depth_maps"
    for i in range(3):
        yy, xx = np.mgrid[:72, :48]
        hole = ((yy - 36) ** 2 / 400 + (xx - 24) ** 2 / 150) < 1
        write_image(depth_maps / f"map_{i}.png", np.where(hole, 30, 140 + 10 * i).astype(np.uint8))
    coco = root / "coco"
    images, annotations, results = [], [], []
    labels_dir = root / "labels"
    for image_id in (1, 2):
        image = rng.integers(40, 80, size=(48, 64)).astype(np.uint8)
        labels = np.zeros((48, 64), np.uint16)
        for k in range(1, 4):
            y, x = 6 + 12 * k, 10 + 14 * k
            labels[y - 4 : y + 4, x - 5 : x + 5] = k
            image[y - 4 : y + 4, x - 5 : x + 5] = 200
            poly = [x - 5, y - 4, x + 5, y - 4, x + 5, y + 4, x - 5, y + 4]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": [[float(v) for v in poly]],
                    "area": 80.0,
                    "bbox": [x - 5, y - 4, 10, 8],
                    "iscrowd": 0,
                }
            )
            results.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "score": 0.9,
                    "segmentation": [[float(v) for v in poly]],
                    "bbox": [x - 5, y - 4, 10, 8],
                }
            )
        name = f"img_{image_id}.png"
        write_image(coco / "images" / name, image)
        write_image(labels_dir / name, labels)
        images.append({"id": image_id, "file_name": name, "height": 48, "width": 64})
    write_json(
        coco / "annotations.json",
        {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "particle"}]},
    )
    write_json(root / "results.json", results)
    table = root / "table.csv"
    assert run(["particles", "measure", str(labels_dir), "--out", str(table)]) == 0
    # run folders of both jobs, without training (both stay valid across model-format changes):
    # an untrained tiny depth method as its run folder writes it, and a particle run folder whose
    # checkpoint is well-formed but holds no usable network
    from micrometry.depth.methods import DEPTH_METHODS
    from micrometry.train.run import save_checkpoint

    depth_run = root / "depth_run"
    method = DEPTH_METHODS.create("unet", width=4)
    write_json(depth_run / "config.json", {"method": method.name, "method_config": method.config()})
    save_checkpoint(
        depth_run / "checkpoints" / "best.pt",
        {"model": method.state_dict(), "method_config": method.config()},
    )
    particle_run = root / "particle_run"
    write_json(particle_run / "config.json", {"model": "center-offset", "settings": {}})
    save_checkpoint(particle_run / "checkpoints" / "best.pt", {"model": "center-offset", "state": {}})
    return Seeds(
        root,
        root / "sem",
        sem_images,
        depth_maps,
        coco,
        root / "results.json",
        labels_dir,
        table,
        depth_run,
        particle_run,
    )


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One command to run in ``work`` and what it may leave behind.

    Attributes
    ----------
    kind, name : str
        The generator and a short description (for the report).
    argv : list of str
        Arguments of ``micrometry`` (paths relative to ``work``).
    outputs : list of str
        Paths (relative to ``work``) the command may create: after the run each
        is complete (exit 0) or absent (exit 2).
    marker : str or None
        A file that exists only if hostile code from a model file ran.
    inputs : list of str
        Inputs (relative to ``work``) that must be unchanged after the run, whatever ``--out`` and
        ``--overwrite`` say (issue 26: an output may never replace its input).
    """

    kind: str
    name: str
    argv: list[str]
    outputs: list[str] = field(default_factory=list)
    marker: str | None = None
    inputs: list[str] = field(default_factory=list)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_claiming(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A small PNG whose header (valid CRC) claims ``width`` x ``height`` pixels: a pixel bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    row = b"\x00" + b"\x00" * 64
    idat = zlib.compress(row * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian TIFF whose tags claim ``width`` x ``height`` 8-bit pixels and hold 16 bytes."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, 16),
    ]
    ifd = (
        struct.pack("<H", len(entries))
        + b"".join(
            struct.pack("<HHII", tag, typ, count, value)
            if typ == 4
            else struct.pack("<HHIHH", tag, typ, count, value, 0)
            for tag, typ, count, value in entries
        )
        + struct.pack("<I", 0)
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def _mutated_image(rng: random.Random, valid: bytes) -> tuple[str, bytes, str]:
    """(description, bytes, suffix) of one malformed image."""
    choice = rng.randrange(14)
    if choice == 0:
        return "truncated", valid[: rng.randrange(len(valid))], ".png"
    if choice == 1:
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(min(len(data), 64))] = rng.randrange(256)
        return "header bytes flipped", bytes(data), ".png"
    if choice == 2:
        data = bytearray(valid)
        for _ in range(rng.randint(1, 32)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return "body bytes flipped", bytes(data), ".png"
    if choice == 3:
        side = rng.choice([20000, 65535, 100000, 2**31 - 1])
        return f"PNG claiming {side}x{side}", png_claiming(side, side), ".png"
    if choice == 4:
        w, h = rng.choice([(9000, 9000), (1, 2**30), (2**31 - 1, 1), (0, 0)])
        return f"PNG claiming {w}x{h}", png_claiming(w, h), ".png"
    if choice == 5:
        side = rng.choice([20000, 100000, 2**31 - 1])
        return f"TIFF claiming {side}x{side}", tiff_claiming(side, side), ".tif"
    if choice == 6:
        data = bytearray(tiff_claiming(72, 48))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return "TIFF bytes flipped", bytes(data), ".tif"
    if choice == 7:
        return "empty", b"", rng.choice([".png", ".tif"])
    if choice == 8:
        return (
            "text as image",
            b"hello, this is not an image\n" * rng.randint(1, 50),
            rng.choice([".png", ".tif", ".jpg"]),
        )
    if choice == 9:
        return (
            "random bytes",
            bytes(rng.randrange(256) for _ in range(rng.randint(1, 4000))),
            rng.choice([".png", ".tif"]),
        )
    if choice == 10:
        return "PNG signature then garbage", b"\x89PNG\r\n\x1a\n" + os.urandom(rng.randint(0, 200)), ".png"
    if choice == 11:
        return "TIFF signature then garbage", b"II*\x00" + os.urandom(rng.randint(0, 200)), ".tif"
    if choice == 12:
        return (
            "wrong size",
            _encode_png(np.zeros((rng.randint(1, 300), rng.randint(1, 300)), np.uint8)),
            ".png",
        )
    arr = np.random.default_rng(rng.randrange(2**32)).integers(0, 255, size=(72, 48, 3)).astype(np.uint8)
    return (
        "colour or 16-bit",
        _encode_png(arr if rng.random() < 0.5 else arr[..., 0].astype(np.uint16) * 257),
        ".png",
    )


def _encode_png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def image_case(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    """A folder with one valid and one malformed image, given to a command that reads images."""
    valid = seeds.sem_images[0].read_bytes()
    what, data, suffix = _mutated_image(rng, valid)
    command = rng.choice(
        [
            "depth predict",
            "particles predict",
            "depth measure",
            "particles measure",
            "particles info",
            "sem info",
            "depth evaluate",
        ]
    )
    folder = work / "in"
    folder.mkdir()
    shutil.copy(seeds.sem_images[0], folder / "good.png")
    (folder / f"bad{suffix}").write_bytes(data)
    name = f"{command}: {what}"
    if command == "depth predict":
        return Case(
            "image",
            name,
            ["depth", "predict", "in", "--out", "pred", "--model", str(seeds.depth_run)],
            ["pred"],
        )
    if command == "particles predict":
        return Case(
            "image", name, ["particles", "predict", "in", "--out", "pred", "--model", "watershed"], ["pred"]
        )
    if command == "depth measure":
        return Case("image", name, ["depth", "measure", "in", "--out", "m.csv"], ["m.csv"])
    if command == "particles measure":
        return Case("image", name, ["particles", "measure", "in", "--out", "m.csv"], ["m.csv"])
    if command == "depth evaluate":
        shutil.copytree(folder, work / "truth")
        return Case("image", name, ["depth", "evaluate", "in", "truth"])
    if command == "sem info":
        shutil.copytree(seeds.sem, work / "sem")
        target = rng.choice(sorted((work / "sem").rglob("*.png")))
        target.unlink()
        target.with_suffix(suffix if suffix == ".png" else ".png").write_bytes(data)
        return Case("image", name, ["sem", "info", "sem"])
    shutil.copytree(seeds.coco, work / "coco")
    target = work / "coco" / "images" / "img_1.png"
    target.write_bytes(data)
    return Case("image", name, ["particles", "info", "coco"])


# -- COCO mutations


def _hostile_value(rng: random.Random):
    return rng.choice(
        [
            None,
            [],
            {},
            "",
            "x",
            -1,
            0,
            1,
            2**63,
            10**30,
            1e308,
            -1e308,
            float("nan"),
            float("inf"),
            True,
            [1],
            [[1]],
            {"a": 1},
            [0, 0, 4e8, 0, 4e8, 4e8],
            [[0, 0, 4e8, 0, 4e8, 4e8]],
            [[-1e9, -1e9, 1e9, -1e9, 1e9, 1e9, -1e9, 1e9]],
            1e9,
            "1",
            [None],
            "é",
            {"size": [10**9, 10**9], "counts": "0"},
            {"size": [48, 64], "counts": [3072]},
            {"size": [48, 64], "counts": "garbage!!"},
            list(range(7)),
        ]
    )


def _paths(obj, prefix=()):
    """Every (path, value) in a JSON tree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def mutate_json(rng: random.Random, data, n: int = 1):
    """``data`` with ``n`` random mutations: a value replaced, a key deleted, or an element duplicated."""
    data = json.loads(json.dumps(data))
    for _ in range(n):
        paths = [p for p, _ in _paths(data) if p]
        if not paths:
            return _hostile_value(rng)
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = rng.random()
        if action < 0.7:
            parent[key] = _hostile_value(rng)
        elif action < 0.85:
            del parent[key]
        elif isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[key])))
        else:
            parent[key] = [parent[key]]
    return data


def coco_case(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    """A mutated annotation or results file given to info / evaluate / measure / predict --images-json."""
    shutil.copytree(seeds.coco, work / "coco")
    ann = json.loads((work / "coco" / "annotations.json").read_text())
    results = json.loads(seeds.results.read_text())
    n = rng.choice([1, 1, 1, 2, 3, 5])
    target = rng.choice(["annotations", "annotations", "results", "images-json"])
    if rng.random() < 0.15:  # the issue's own cases, often
        special = rng.choice(["polygon 4e8", "width 1e9", "image_id [1]", "sub-path names"])
        if special == "polygon 4e8":
            ann["annotations"][0]["segmentation"] = [[0, 0, 4e8, 0, 4e8, 4e8]]
        elif special == "width 1e9":
            ann["images"][0]["width"] = 10**9
        elif special == "image_id [1]":
            ann["annotations"][0]["image_id"] = [1]
        else:
            (work / "coco" / "images" / "sub").mkdir()
            shutil.copy(
                work / "coco" / "images" / "img_1.png", work / "coco" / "images" / "sub" / "img_1.png"
            )
            ann["images"][1]["file_name"] = "sub/img_1.png"
        name = f"coco: {special}"
        target = "annotations" if special != "sub-path names" else "images-json"
    else:
        name = f"coco {target}: {n} mutation(s)"
        if target == "results":
            results = mutate_json(rng, results, n)
        else:
            ann = mutate_json(rng, ann, n)
    text = json.dumps(ann, allow_nan=True)
    (work / "coco" / "annotations.json").write_text(text)
    (work / "results.json").write_text(json.dumps(results, allow_nan=True))
    if target == "results":
        return Case("coco", name, ["particles", "evaluate", "results.json", "coco/annotations.json"])
    if target == "images-json":
        return Case(
            "coco",
            name,
            [
                "particles",
                "predict",
                "coco/images",
                "--images-json",
                "coco/annotations.json",
                "--model",
                "watershed",
                "--out",
                "pred",
            ],
            ["pred"],
        )
    command = rng.choice(["info", "info", "measure", "evaluate"])
    if command == "info":
        return Case("coco", name, ["particles", "info", "coco", "--json"])
    if command == "measure":
        return Case(
            "coco", name, ["particles", "measure", "coco/annotations.json", "--out", "m.csv"], ["m.csv"]
        )
    return Case("coco", name, ["particles", "evaluate", str(seeds.results), "coco/annotations.json"])


# -- model files


class _Hostile:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def hostile_model_bytes(
    rng: random.Random, marker: Path, seeds: Seeds, code_only: bool = False
) -> tuple[str, bytes]:
    """(description, bytes) of one hostile or broken checkpoint file (``code_only``: one that runs code)."""
    import io

    import torch

    choice = rng.randrange(3 if code_only else 8)
    if choice == 0:
        buf = io.BytesIO()
        torch.save({"format": "micrometry-checkpoint", "model": _Hostile(marker)}, buf)
        return "torch zip running os.system", buf.getvalue()
    if choice == 1:
        return "bare pickle running os.system", pickle.dumps(_Hostile(marker), protocol=rng.choice([2, 4, 5]))
    if choice == 2:
        buf = io.BytesIO()
        torch.save(_Hostile(marker), buf)
        return "torch zip whose top object runs os.system", buf.getvalue()
    valid = (seeds.depth_run / "checkpoints" / "best.pt").read_bytes()
    if choice == 3:
        return "truncated checkpoint", valid[: rng.randrange(len(valid))]
    if choice == 4:
        data = bytearray(valid)
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return "checkpoint bytes flipped", bytes(data)
    if choice == 5:
        return "random bytes", os.urandom(rng.randint(0, 5000))
    if choice == 6:
        return "the other job's checkpoint", (seeds.particle_run / "checkpoints" / "best.pt").read_bytes()
    buf = io.BytesIO()
    torch.save(
        rng.choice([[1, 2], "text", {"format": "micrometry-checkpoint"}, {"format": 1, "model": [1]}]), buf
    )
    return "plain data, not a checkpoint", buf.getvalue()


def model_case(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    """A run folder with a hostile/broken checkpoint or config, given to predict or --resume."""
    marker = work / "PWNED"
    job = rng.choice(["depth", "depth", "particles"])
    run = work / "run"
    shutil.copytree(seeds.depth_run if job == "depth" else seeds.particle_run, run)
    if rng.random() < 0.2:
        what = "config.json " + rng.choice(["not JSON", "a list", "unknown method", "no method", "binary"])
        config = {
            "not JSON": "{oops",
            "a list": "[1, 2]",
            "unknown method": '{"method": "x", "model": "x"}',
            "no method": "{}",
            "binary": "\xff\xfe",
        }[what.split(" ", 1)[1]]
        (run / "config.json").write_text(config, encoding="latin-1")
    else:
        what, data = hostile_model_bytes(rng, marker, seeds)
        for name in ("best.pt", "last.pt"):
            (run / "checkpoints" / name).write_bytes(data)
    shutil.copytree(seeds.sem / "test" / "SEM", work / "in")
    action = rng.choice(["predict", "predict", "predict", "resume"])
    if job == "depth" and action == "resume":
        return Case(
            "model",
            f"depth train --resume: {what}",
            ["depth", "train", str(seeds.sem), "--out", "run", "--resume", "--epochs", "2"],
            marker="PWNED",
        )
    if job == "depth":
        return Case(
            "model",
            f"depth predict: {what}",
            ["depth", "predict", "in", "--model", "run", "--out", "pred"],
            ["pred"],
            marker="PWNED",
        )
    target = rng.choice(["particles", "particles", "depth", "resume"])
    if target == "resume":
        return Case(
            "model",
            f"particles train --resume: {what}",
            [
                "particles",
                "train",
                str(seeds.coco),
                "--out",
                "run",
                "--resume",
                "--epochs",
                "1",
                "--threads",
                "1",
            ],
            marker="PWNED",
        )
    if target == "depth":
        return Case(
            "model",
            f"depth predict given a particle run: {what}",
            ["depth", "predict", "in", "--model", "run", "--out", "pred"],
            ["pred"],
            marker="PWNED",
        )
    return Case(
        "model",
        f"particles predict: {what}",
        ["particles", "predict", "in", "--model", "run", "--out", "pred"],
        ["pred"],
        marker="PWNED",
    )


def hostile_case(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    """``depth predict`` with a run folder whose checkpoint runs code when unpickled."""
    what, data = hostile_model_bytes(rng, work / "PWNED", seeds, code_only=True)
    shutil.copytree(seeds.depth_run, work / "run")
    (work / "run" / "checkpoints" / "best.pt").write_bytes(data)
    shutil.copytree(seeds.sem / "test" / "SEM", work / "in")
    return Case(
        "model", what, ["depth", "predict", "in", "--model", "run", "--out", "pred"], ["pred"], marker="PWNED"
    )


# -- options

FLOATS = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "0",
    "1e308",
    "1e400",
    "-0",
    "0.5",
    "2",
    "1e-308",
    "abc",
    "",
    "1,5",
]
INTS = ["-1", "0", "1", "2", "99999999999999999999", "abc", "1.5", "", "3"]
WORDS = ["", "x", "um", "µm", "a b", "-", "--", "../../etc", "\t"]


def _value(rng: random.Random, kind: str) -> str:
    if kind == "float":
        return rng.choice(FLOATS)
    if kind == "int":
        return rng.choice(INTS)
    if kind == "small_int":  # counts that make work: never huge, so a valid one stays cheap
        return rng.choice(["-1", "0", "1", "2", "abc", "1.5"])
    if kind == "word":
        return rng.choice(WORDS)
    if kind.startswith("choice:"):
        return rng.choice(kind[7:].split("|") + ["", "nonsense"])
    if kind == "out":
        return rng.choice(
            ["o1", "afile", "afile/o2", "adir", "adir/o3", "/proc/o4", "", ".", "o1/", "sem_in"]
        )
    if kind == "in":
        return rng.choice(["nowhere", "afile", "adir", "", ".", "/dev/null", "/proc/self/mem"])
    if kind.startswith("param"):
        return rng.choice(
            [
                "lr=abc",
                "lr=-1",
                "lr=nan",
                "lr=0.001",
                "width=1.5",
                "width=-3",
                "batch_size=0",
                "nosuch=1",
                "=1",
                "lr",
                "epochs=true",
                "lr=[1]",
                "val_fraction=2",
            ]
        )
    raise ValueError(kind)


# command -> (fixed arguments builder, {option: kind}); flags with kind "flag" are given bare
COMMANDS: dict[str, tuple[Callable[[Seeds], list[str]], dict[str, str]]] = {
    "depth predict": (
        lambda s: ["depth", "predict", "sem_in", "--model", str(s.depth_run)],
        {
            "--out": "out",
            "--zip": "out",
            "--batch-size": "int",
            "--threads": "small_int",
            "--device": "choice:cpu|auto|cuda",
            "--overwrite": "flag",
            "--engine": "choice:local",
        },
    ),
    "depth measure": (
        lambda s: ["depth", "measure", str(s.depth_maps)],
        {
            "--out": "out",
            "--nm-per-px": "float",
            "--top-level": "float",
            "--bottom-level": "float",
            "--overwrite": "flag",
        },
    ),
    "depth evaluate": (lambda s: ["depth", "evaluate", str(s.depth_maps)], {"": "in", "--json": "flag"}),
    "depth train": (
        lambda s: ["depth", "train", str(s.sem), *TINY_UNET_OPTIONS, "--epochs", "1"],
        {
            "--out": "out",
            "--param": "param",
            "--seed": "int",
            "--threads": "small_int",
            "--time-budget": "float",
            "--resume": "flag",
            "--overwrite": "flag",
            "--device": "choice:cpu",
        },
    ),
    "sem info": (lambda s: ["sem", "info"], {"": "in", "--json": "flag", "--no-check-images": "flag"}),
    "particles info": (
        lambda s: ["particles", "info", str(s.coco)],
        {
            "--max-rows": "int",
            "--json": "flag",
            "--images": "in",
            "--annotations": "in",
            "--no-check-images": "flag",
        },
    ),
    "particles predict": (
        lambda s: ["particles", "predict", str(s.coco / "images"), "--model", "watershed"],
        {
            "--out": "out",
            "--batch-size": "small_int",
            "--scale": "float",
            "--tile": "int",
            "--no-overlays": "flag",
            "--overwrite": "flag",
            "--images-json": "in",
            "--threads": "small_int",
            "--ensemble": "choice:watershed,watershed:2|watershed|a,,b|watershed:-1,watershed|watershed:nan,x",
        },
    ),
    "particles measure": (
        lambda s: ["particles", "measure", str(s.labels)],
        {
            "--out": "out",
            "--pixel-size": "float",
            "--unit": "word",
            "--min-score": "float",
            "--exclude-edges": "flag",
            "--images": "in",
            "--overwrite": "flag",
            "--threads": "small_int",
        },
    ),
    "particles evaluate": (
        lambda s: ["particles", "evaluate", str(s.results), str(s.coco / "annotations.json")],
        {"--max-dets": "int", "--match-score": "float", "--json": "flag"},
    ),
    "particles compare": (
        lambda s: ["particles", "compare", str(s.table), str(s.table)],
        {
            "--out": "out",
            "--alpha": "float",
            "--rel-threshold": "float",
            "--n-boot": "choice:100|0|-1|abc",
            "--seed": "int",
            "--pixel-size": "float",
            "--overwrite": "flag",
            "--threads": "small_int",
        },
    ),
    "synth sem": (
        lambda s: [
            "synth",
            "sem",
            "--n-structures",
            "1",
            "--n-sites",
            "1",
            "--images-per-site",
            "1",
            "--n-test",
            "1",
        ],
        {"": "out", "--truth": "out", "--seed": "int", "--n-test": "small_int", "--overwrite": "flag"},
    ),
    "synth particles": (
        lambda s: [
            "synth",
            "particles",
            "--n-train",
            "1",
            "--n-test",
            "0",
            "--n-batch",
            "0",
            "--height",
            "48",
            "--width",
            "64",
        ],
        {
            "": "out",
            "--truth": "out",
            "--seed": "int",
            "--n-train": "small_int",
            "--height": "choice:32|-1|abc|48",
            "--overwrite": "flag",
        },
    ),
}


# Commands whose valid runs take seconds (compare draws a report with matplotlib).
SLOW_COMMANDS = {"particles compare", "synth particles", "synth sem"}


def options_case(rng: random.Random, seeds: Seeds, work: Path) -> Case:
    """One command with random values for a random subset of its options."""
    command = rng.choice(sorted(COMMANDS))
    if command in SLOW_COMMANDS and rng.random() < 0.75:  # seconds per valid run: drawn a quarter as often
        command = rng.choice(sorted(set(COMMANDS) - SLOW_COMMANDS))
    fixed, options = COMMANDS[command]
    (work / "afile").write_text("a file where a folder or a new output is expected\n")
    (work / "adir").mkdir()
    (work / "adir" / "something").write_text("x")
    shutil.copytree(seeds.sem / "test" / "SEM", work / "sem_in")
    argv = fixed(seeds)
    chosen = [o for o in options if rng.random() < 0.5]
    required = {"--out", "", "--truth"} & set(options)
    chosen = sorted(set(chosen) | {o for o in required if rng.random() < 0.85})
    outputs = []
    for option in chosen:
        kind = options[option]
        if kind == "flag":
            argv.append(option)
            continue
        value = _value(rng, kind)
        if option == "" and command == "sem info" and rng.random() < 0.5:
            value = str(seeds.sem)
        if option == "" and command == "depth evaluate" and rng.random() < 0.5:
            value = str(seeds.depth_maps)
        argv += [value] if option == "" else [option, value]
        if kind == "out" and value in ("o1", "o1/", "afile/o2", "adir/o3", "/proc/o4"):
            outputs.append(value.rstrip("/"))
    if command.startswith("depth train") and "--out" not in chosen:
        outputs = []
    desc = " ".join(
        a if not a.startswith("/") or a.startswith("/proc") or a.startswith("/dev") else "<seed>"
        for a in argv
    )
    # sem_in named by the command itself (not drawn as an output) is an input: it must survive
    inputs = ["sem_in"] if "sem_in" in fixed(seeds) else []
    return Case("options", desc, argv, [o for o in outputs if not o.startswith("/proc")], inputs=inputs)


GENERATORS: dict[str, Callable[[random.Random, Seeds, Path], Case]] = {
    "image": image_case,
    "coco": coco_case,
    "model": model_case,
    "options": options_case,
}


# ----------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What one case did and which parts of the contract it broke (``breaks`` empty: kept)."""

    case: Case
    code: int | None
    seconds: float
    peak_rss_mb: float
    stderr: str
    breaks: list[str]


def preload() -> None:
    """Import what the commands import lazily, so that a forked case does not import it again."""
    import torch

    import micrometry.cli  # noqa: F401  (all commands)

    torch.set_num_threads(1)
    for module in (
        "micrometry.depth.methods",
        "micrometry.depth.predict",
        "micrometry.particles.predict",
        "micrometry.particles.measure",
        "micrometry.particles.compare_run",
        "micrometry.particles.evaluate",
        "micrometry.particles.segmenter",
        "micrometry.particles.watershed",
        "micrometry.particles.info",
        "micrometry.synth.sem_dataset",
        "micrometry.synth.particle_dataset",
        "pycocotools.coco",
        "pycocotools.cocoeval",
        "skimage.segmentation",
        "skimage.measure",
        "pandas",
        "tifffile",
        "rich.table",
        "micrometry.depth.evaluate",
        "micrometry.io.coco",
    ):
        __import__(module)
    from micrometry.depth.methods import DEPTH_METHODS
    from micrometry.particles.models import PARTICLE_MODELS

    DEPTH_METHODS.list()  # imports the built-in depth methods
    PARTICLE_MODELS.list()  # and the particle models


def run_case(
    case: Case, work: Path, timeout_s: float = 120.0, memory_limit: int = MEMORY_LIMIT_BYTES
) -> Outcome:
    """Run ``case`` in a forked child in ``work`` under ``RLIMIT_AS``; check the contract.

    The child may map ``memory_limit`` bytes beyond the address space it inherits.
    """
    err_path, out_path = work.parent / f"{work.name}.stderr", work.parent / f"{work.name}.stdout"
    sys.stdout.flush()
    sys.stderr.flush()
    before = {name: snapshot(work / name) for name in case.inputs}
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.chdir(work)
            err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
            sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
            limit = address_space_bytes() + memory_limit
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            from micrometry.cli import run

            code = run(case.argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # what `python -m micrometry` would show: a traceback, exit 1
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = started + timeout_s
    timed_out = False
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid:
            break
        if time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            wpid, status, usage = os.wait4(pid, 0)
            timed_out = True
            break
        time.sleep(0.002)
    seconds = time.perf_counter() - started
    stderr = err_path.read_text(errors="replace") if err_path.exists() else ""
    code = os.waitstatus_to_exitcode(status)
    breaks = []
    if timed_out:
        breaks.append(f"timeout after {timeout_s:.0f} s")
    elif code not in (0, 2):
        breaks.append(f"exit code {code}")
    if "Traceback (most recent call last)" in stderr:
        breaks.append("traceback")
    if code == 2 and not timed_out and not _one_line_error(stderr):
        breaks.append("exit 2 without an 'error:' or usage line")
    breaks += leftovers(work)
    for output in case.outputs:
        path = work / output
        if code == 0 and not path.exists() and not timed_out:
            breaks.append(f"exit 0 but {output} missing")
        if code != 0 and path.exists() and not _preexisting(output):
            breaks.append(f"failed but left {output}")
    if case.marker and (work / case.marker).exists():
        breaks.append("code from a model file ran")
    breaks += [f"input {name} changed" for name, seen in before.items() if snapshot(work / name) != seen]
    return Outcome(case, code, seconds, usage.ru_maxrss / 1024, stderr, breaks)


def snapshot(path: Path) -> dict[str, bytes] | bytes | None:
    """A file's bytes, or a folder's files and their bytes (None: absent)."""
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


def _preexisting(output: str) -> bool:
    return output in ("afile", "adir") or output.startswith("adir/something")


def _one_line_error(stderr: str) -> bool:
    return any(
        line.startswith("error: ") or "Usage:" in line or "Error" in line for line in stderr.splitlines()
    )


def leftovers(work: Path) -> list[str]:
    """Temporary or partial outputs under ``work`` (none may survive a run)."""
    found = []
    for path in work.rglob("*"):
        name = path.name
        if name.endswith(".partial") or ".tmp" in name or name.startswith(".micrometry-write-test"):
            found.append(f"left {path.relative_to(work)}")
    return found


def fuzz(
    seeds: Seeds,
    scratch: Path,
    n: int,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
    timeout_s: float = 120.0,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``n`` cases, drawn round-robin from ``kinds``; each in a fresh folder under ``scratch``."""
    rng = random.Random(seed)
    outcomes = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        work = scratch / f"case{i:05d}"
        work.mkdir(parents=True)
        case = GENERATORS[kind](random.Random(rng.randrange(2**63)), seeds, work)
        outcome = run_case(case, work, timeout_s=timeout_s)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
        if not outcome.breaks:  # keep the evidence of a break, drop the rest
            shutil.rmtree(work, ignore_errors=True)
            for suffix in (".stderr", ".stdout"):
                (scratch / f"{work.name}{suffix}").unlink(missing_ok=True)
    return outcomes


# ----------------------------------------------------------------------------- a clean driver process

_SEEDS: dict[str, Seeds] = {}


def run_batch(kind: str, n: int, seed: int, root: str, exclude: tuple[str, ...] = ()) -> list[dict]:
    """Run ``n`` cases of ``kind`` and return plain results (what a spawned driver process sends back).

    Forking is only safe from a process in a known state: a test session that
    trained models or ran servers before may hold threads and locks that a
    forked child inherits half-taken. So tests call this in a freshly spawned
    process (see ``tests/test_fuzz.py``), which preloads, builds the seeds in
    ``root`` once, and forks its cases from there. ``exclude`` drops commands
    from the ``options`` generator.
    """
    global COMMANDS
    if root not in _SEEDS:
        preload()
        _SEEDS[root] = build_seeds(Path(root) / "seeds")
    seeds = _SEEDS[root]
    saved = COMMANDS
    COMMANDS = {k: v for k, v in saved.items() if k not in exclude}
    try:
        rng = random.Random(seed)
        out = []
        for i in range(n):
            work = Path(root) / f"{kind}-{seed}-{i}"
            work.mkdir(parents=True)
            case = {**GENERATORS, "hostile": hostile_case}[kind](
                random.Random(rng.randrange(2**63)), seeds, work
            )
            o = run_case(case, work, timeout_s=60)
            out.append(
                {
                    "name": case.name,
                    "argv": case.argv,
                    "code": o.code,
                    "breaks": o.breaks,
                    "stderr": o.stderr[-1500:],
                    "rss_mb": o.peak_rss_mb,
                }
            )
        return out
    finally:
        COMMANDS = saved
