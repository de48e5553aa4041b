"""Score predicted depth maps against the truth: pixel RMSE overall and per case.

The competition's metric is the RMSE over every pixel of every test depth map
(0-255 values). Per case it is the same over the images of one case (etch
depth), which tells where a method fails.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from micrometry.depth.dataset import CASE_DEPTHS, load_image_folder, read_stack
from micrometry.errors import DatasetError


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean square error over all pixels of all maps."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2))) if diff.size else float("nan")


def case_from_top_level(maps: np.ndarray) -> np.ndarray:
    """Case 1..4 of depth maps from their top level (140/150/160/170 for 110..140 nm holes plus a 30 nm bottom)."""
    top = np.median(np.asarray(maps, dtype=np.float32).reshape(len(maps), -1), axis=1)
    tops = np.asarray(CASE_DEPTHS, dtype=np.float32) + 30.0
    return np.abs(top[:, None] - tops[None]).argmin(axis=1) + 1


def read_case_column(truth_csv: Path) -> dict[str, int]:
    """``file -> case`` from a ``test_truth.csv`` as ``micrometry synth sem --truth`` writes it."""
    with open(truth_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"file", "case"} <= set(rows[0]):
        raise DatasetError("expected columns 'file' and 'case'", truth_csv)
    return {Path(r["file"]).name: int(r["case"]) for r in rows}


def score(pred: np.ndarray, truth: np.ndarray, case: np.ndarray) -> dict:
    """RMSE overall and per case.

    Returns
    -------
    dict
        ``{"rmse": float, "images": int, "per_case": {"1": {"rmse", "images"}, ...}}``.
    """
    result = {"rmse": rmse(pred, truth), "images": int(len(pred)), "per_case": {}}
    for c in np.unique(case):
        rows = case == c
        result["per_case"][str(int(c))] = {"rmse": rmse(pred[rows], truth[rows]), "images": int(rows.sum())}
    return result


def evaluate_folders(pred_dir: str | Path, truth_dir: str | Path) -> dict:
    """Compare every depth PNG in ``truth_dir`` with the same-named PNG in ``pred_dir``.

    Cases come from the ``case`` column of a ``test_truth.csv`` beside (or inside)
    ``truth_dir`` when there is one, else from each true map's top level.

    Raises
    ------
    DatasetError
        A folder without images, or a truth image without its prediction.
    """
    truth_dir = Path(truth_dir)
    if (truth_dir / "test_depth").is_dir():  # the TRUTH root written by synth sem
        truth_dir = truth_dir / "test_depth"
    truth = load_image_folder(truth_dir)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DatasetError("no such prediction folder", pred_dir)
    missing = [n for n in truth.names if not (pred_dir / n).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} true map(s) have no prediction, e.g. {missing[0]}", pred_dir)
    pred = read_stack([pred_dir / n for n in truth.names], "reading predictions")
    case = case_from_top_level(truth.images)
    for csv_path in (truth_dir.parent / "test_truth.csv", truth_dir / "test_truth.csv"):
        if csv_path.is_file():
            cases = read_case_column(csv_path)
            if all(n in cases for n in truth.names):
                case = np.array([cases[n] for n in truth.names])
            break
    return score(pred, truth.images, case)
