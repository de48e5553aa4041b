"""Read and validate SEM depth datasets in the 2022 Samsung 3D-metrology layout.

The layout (any part may be absent, but not all of them)::

    DATA/simulation_data/Depth/Case_{1..4}/{family}/<base>.png
    DATA/simulation_data/SEM/Case_{1..4}/{family}/<base>_itr0.png, <base>_itr1.png
    DATA/train/SEM/Depth_{110,120,130,140}/site_XXXXX/SEM_XXXXXX.png
    DATA/train/average_depth.csv       header "0,1"; rows "depth_140_site_00233,138.966170"
    DATA/test/SEM/XXXXXX.png

:func:`index_dataset` walks the folders and checks the layout without decoding
images; :func:`validate_images` decodes them and checks their size; the
``load_*`` functions read everything into memory (a 72x48 image is 3.5 kB, so
even the full competition set fits), and the ``*Dataset`` classes serve them to
PyTorch.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from micrometry.errors import DatasetError
from micrometry.io.image import read_image, to_gray_u8
from micrometry.progress import track

IMAGE_SHAPE = (72, 48)
CASE_DEPTHS = (110, 120, 130, 140)

_CASE_DIR = re.compile(r"^Case_(\d+)$")
_ITR = re.compile(r"^(?P<base>.+)_itr(?P<itr>[01])\.png$")
_DEPTH_DIR = re.compile(r"^Depth_(\d+)$")
_SITE_DIR = re.compile(r"^site_(\d+)$")
_CSV_KEY = re.compile(r"^depth_(\d+)_site_(\d+)$")


@dataclass(frozen=True)
class SimPair:
    """One simulated depth map and its two SEM renders."""

    case: int  # 1..4
    family: str
    base: str
    depth: Path
    sem: tuple[Path, Path]


@dataclass(frozen=True)
class RealImage:
    """One real training image with its site and the site's average depth."""

    path: Path
    nominal: int  # the Depth_* folder
    site: str  # "site_00233"
    site_depth: float


@dataclass
class Problem:
    """One defect found in a dataset."""

    path: Path
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class SemIndex:
    """What :func:`index_dataset` found."""

    root: Path
    sim: list[SimPair] = field(default_factory=list)
    real: list[RealImage] = field(default_factory=list)
    test: list[Path] = field(default_factory=list)
    site_depths: dict[str, float] = field(default_factory=dict)  # "depth_140_site_00233" -> depth
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.fatal]

    def raise_for_errors(self) -> None:
        """Raise a :class:`DatasetError` on the first fatal problem (the CLI lists them all)."""
        if self.errors:
            first = self.errors[0]
            more = f" (and {len(self.errors) - 1} more problems)" if len(self.errors) > 1 else ""
            raise DatasetError(first.message + more, first.path)

    def counts(self) -> dict[str, Counter]:
        """Images per simulation case, per real depth folder and per site."""
        return {
            "sim_pairs_per_case": Counter(p.case for p in self.sim),
            "real_images_per_depth": Counter(r.nominal for r in self.real),
            "real_sites_per_depth": Counter(n for n, _ in {(r.nominal, r.site) for r in self.real}),
            "images_per_site": Counter(r.site for r in self.real),
        }


def index_dataset(root: str | Path) -> SemIndex:
    """Walk a dataset folder and check its layout (file names, pairing, CSV).

    Images are not decoded here; see :func:`validate_images`.

    Raises
    ------
    DatasetError
        ``root`` is not a folder or holds none of the three parts.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("no such dataset folder", root)
    index = SemIndex(root=root)
    _index_simulation(root / "simulation_data", index)
    _index_real_train(root / "train", index)
    test_dir = root / "test" / "SEM"
    if test_dir.is_dir():
        index.test = sorted(test_dir.glob("*.png"))
        for other in sorted(p for p in test_dir.iterdir() if p.suffix.lower() != ".png"):
            index.problems.append(
                Problem(other, "unexpected file in test/SEM (expected .png images)", fatal=False)
            )
    if not (index.sim or index.real or index.test):
        raise DatasetError(
            "holds no simulation_data/, train/ or test/SEM images in the expected layout", root
        )
    return index


def _index_simulation(sim_root: Path, index: SemIndex) -> None:
    depth_root, sem_root = sim_root / "Depth", sim_root / "SEM"
    if not sim_root.exists():
        return
    if not sem_root.is_dir() or not depth_root.is_dir():
        index.problems.append(Problem(sim_root, "needs both SEM/ and Depth/ folders"))
        return
    sem_files: dict[tuple[int, str, str], dict[int, Path]] = {}
    for path in sorted(sem_root.glob("*/*/*")):
        case = _case_of(path.parent.parent, index)
        if case is None or not path.is_file():
            continue
        match = _ITR.match(path.name)
        if not match:
            index.problems.append(Problem(path, "simulated SEM name must end in _itr0.png or _itr1.png"))
            continue
        key = (case, path.parent.name, match["base"])
        sem_files.setdefault(key, {})[int(match["itr"])] = path
    depth_files = {}
    for path in sorted(depth_root.glob("*/*/*.png")):
        case = _case_of(path.parent.parent, index)
        if case is not None:
            depth_files[(case, path.parent.name, path.stem)] = path
    for key, renders in sem_files.items():
        case, family, base = key
        if set(renders) != {0, 1}:
            missing = 1 - next(iter(renders))
            index.problems.append(
                Problem(next(iter(renders.values())), f"its pair _itr{missing}.png is missing")
            )
            continue
        if key not in depth_files:
            index.problems.append(Problem(renders[0], f"no depth map Depth/Case_{case}/{family}/{base}.png"))
            continue
        index.sim.append(SimPair(case, family, base, depth_files[key], (renders[0], renders[1])))
    for key in sorted(set(depth_files) - set(sem_files)):
        index.problems.append(Problem(depth_files[key], "depth map without SEM images", fatal=False))


def _case_of(case_dir: Path, index: SemIndex) -> int | None:
    match = _CASE_DIR.match(case_dir.name)
    if not match:
        index.problems.append(Problem(case_dir, "expected a Case_<n> folder", fatal=False))
        return None
    return int(match[1])


def _index_real_train(train_root: Path, index: SemIndex) -> None:
    sem_root, csv_path = train_root / "SEM", train_root / "average_depth.csv"
    if not train_root.exists():
        return
    if sem_root.is_dir() and not csv_path.is_file():
        index.problems.append(
            Problem(csv_path, "missing: real training images need their sites' average depths")
        )
        return
    if csv_path.is_file():
        index.site_depths = _read_average_depth(csv_path, index)
    if not sem_root.is_dir():
        index.problems.append(
            Problem(sem_root, "missing: average_depth.csv lists sites but there are no images")
        )
        return
    seen_keys = set()
    for depth_dir in sorted(p for p in sem_root.iterdir() if p.is_dir()):
        depth_match = _DEPTH_DIR.match(depth_dir.name)
        if not depth_match:
            index.problems.append(Problem(depth_dir, "expected a Depth_<nm> folder"))
            continue
        nominal = int(depth_match[1])
        for site_dir in sorted(p for p in depth_dir.iterdir() if p.is_dir()):
            if not _SITE_DIR.match(site_dir.name):
                index.problems.append(Problem(site_dir, "expected a site_<number> folder"))
                continue
            key = f"depth_{nominal}_{site_dir.name}"
            images = sorted(site_dir.glob("*.png"))
            if key not in index.site_depths:
                index.problems.append(
                    Problem(site_dir, f"site has images but no row {key!r} in average_depth.csv")
                )
                continue
            if not images:
                continue
            seen_keys.add(key)
            index.real.extend(RealImage(p, nominal, site_dir.name, index.site_depths[key]) for p in images)
    for key in sorted(set(index.site_depths) - seen_keys):
        index.problems.append(Problem(csv_path, f"site {key!r} has no images", fatal=False))


def _read_average_depth(path: Path, index: SemIndex) -> dict[str, float]:
    depths: dict[str, float] = {}
    try:  # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the header
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as exc:
        index.problems.append(
            Problem(path, f"not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8 CSV")
        )
        return depths
    except (OSError, csv.Error) as exc:
        index.problems.append(Problem(path, f"cannot read the CSV ({exc})"))
        return depths
    if not rows or [c.strip() for c in rows[0]] != ["0", "1"]:
        index.problems.append(Problem(path, 'header must be "0,1"'))
        return depths
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2 or not _CSV_KEY.match(row[0].strip()):
            index.problems.append(
                Problem(path, f"line {line_no}: expected 'depth_<nm>_site_<n>,<depth>', got {row}")
            )
            continue
        try:
            value = float(row[1])
        except ValueError:
            index.problems.append(Problem(path, f"line {line_no}: depth {row[1]!r} is not a number"))
            continue
        if not np.isfinite(value) or not 0 < value < 255:
            index.problems.append(Problem(path, f"line {line_no}: depth {value} is outside 0..255"))
            continue
        if row[0].strip() in depths:
            index.problems.append(Problem(path, f"line {line_no}: site {row[0]!r} appears twice"))
            continue
        depths[row[0].strip()] = value
    return depths


def validate_images(index: SemIndex, limit: int | None = None) -> None:
    """Decode images and check they are 72x48; problems are added to ``index.problems``."""
    paths = [p.depth for p in index.sim] + [s for p in index.sim for s in p.sem]
    paths += [r.path for r in index.real] + list(index.test)
    for path in track(paths[:limit], "checking images"):
        try:
            image = to_gray_u8(read_image(path, shape=IMAGE_SHAPE))
        except DatasetError as exc:
            index.problems.append(Problem(path, exc.message))
            continue
        except Exception as exc:  # ImageReadError and friends
            index.problems.append(Problem(path, getattr(exc, "message", str(exc))))
            continue
        if image.shape != IMAGE_SHAPE:
            index.problems.append(
                Problem(path, f"image is {image.shape[0]}x{image.shape[1]}, expected 72x48")
            )


# -- loading into memory -------------------------------------------------------


def read_stack(paths: list[Path], description: str = "reading SEM images") -> np.ndarray:
    """``(N, 72, 48)`` uint8 images, each checked to be 72x48 (a :class:`DatasetError` names the first that is not)."""
    out = np.empty((len(paths), *IMAGE_SHAPE), dtype=np.uint8)
    for i, path in enumerate(track(paths, description)):
        out[i] = sem_image(read_image(path, shape=IMAGE_SHAPE), path)  # size checked before decoding
    return out


def sem_image(image: np.ndarray, name: str | Path) -> np.ndarray:
    """A decoded image (file or upload ``name``) as a 72x48 uint8 SEM image; 16-bit data is scaled by 1/257.

    Raises
    ------
    DatasetError
        The image is not 72x48.
    """
    if image.shape != IMAGE_SHAPE:
        raise DatasetError(f"image is {image.shape[0]}x{image.shape[1]}, expected 72x48", name)
    return to_gray_u8(image)


@dataclass
class SimArrays:
    """Simulated pairs in memory: ``sem[i, itr]`` renders ``depth[i]``."""

    sem: np.ndarray  # (N, 2, 72, 48) uint8
    depth: np.ndarray  # (N, 72, 48) uint8 heights
    case: np.ndarray  # (N,) 1..4
    base: np.ndarray  # (N,) str: the base structure, shared by its four cases

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Train/validation row indices split by base structure.

        A base structure appears in all four cases with the same geometry, so a
        split by row or by case would leak geometry into validation.
        """
        bases = np.unique(self.base)
        rng = np.random.default_rng(seed)
        n_val = int(round(len(bases) * val_fraction))
        val_bases = set(rng.choice(bases, size=n_val, replace=False).tolist()) if n_val else set()
        is_val = np.array([b in val_bases for b in self.base])
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)


@dataclass
class RealArrays:
    """Real training images with their site labels."""

    images: np.ndarray  # (N, 72, 48) uint8
    nominal: np.ndarray  # (N,) 110..140
    site: np.ndarray  # (N,) int site code, unique per (depth folder, site)
    site_depth: np.ndarray  # (N,) float
    names: list[str]

    @property
    def case(self) -> np.ndarray:
        """Case index 1..4 of each image, from its Depth_* folder."""
        return np.searchsorted(np.asarray(CASE_DEPTHS), self.nominal) + 1


def site_split(real: RealArrays, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation rows of real images split by site (images of one site are alike)."""
    sites = np.unique(real.site)
    n_val = int(round(len(sites) * val_fraction)) if len(sites) > 1 else 0
    val_sites = np.random.default_rng(seed).choice(sites, size=n_val, replace=False)
    is_val = np.isin(real.site, val_sites)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


@dataclass
class ImageArrays:
    """Plain images with their names (test sets, prediction inputs)."""

    images: np.ndarray  # (N, 72, 48) uint8
    names: list[str]


def load_sim(index: SemIndex) -> SimArrays:
    pairs = index.sim
    sem = read_stack([p for pair in pairs for p in pair.sem], "loading simulated SEM")
    depth = read_stack([pair.depth for pair in pairs], "loading depth maps")
    return SimArrays(
        sem.reshape(len(pairs), 2, *IMAGE_SHAPE),
        depth,
        np.array([p.case for p in pairs]),
        np.array([f"{p.family}/{p.base}" for p in pairs]),
    )


def load_real(index: SemIndex) -> RealArrays:
    images = read_stack([r.path for r in index.real], "loading real SEM")
    keys = [f"{r.nominal}/{r.site}" for r in index.real]
    codes = {k: i for i, k in enumerate(sorted(set(keys)))}
    return RealArrays(
        images,
        np.array([r.nominal for r in index.real]),
        np.array([codes[k] for k in keys]),
        np.array([r.site_depth for r in index.real], dtype=np.float32),
        [str(r.path.relative_to(index.root)) for r in index.real],
    )


def load_test(index: SemIndex) -> ImageArrays:
    return ImageArrays(read_stack(index.test, "loading test SEM"), [p.name for p in index.test])


def load_image_folder(folder: str | Path) -> ImageArrays:
    """Every PNG/JPEG/TIFF in ``folder`` (a dataset root uses its test/SEM), as 72x48 gray."""
    paths = image_paths(folder)
    return ImageArrays(read_stack(paths, "loading SEM images"), [p.name for p in paths])


def image_paths(folder: str | Path) -> list[Path]:
    """The image files :func:`load_image_folder` reads, in its order."""
    from micrometry.io.image import list_images

    folder = Path(folder)
    if (folder / "test" / "SEM").is_dir():
        folder = folder / "test" / "SEM"
    paths = list_images(folder)
    if not paths:
        raise DatasetError("no images found", folder)
    return paths
