"""Benchmark of ``micrometry depth frame`` on synthetic CD-SEM frames (docs/depth.md, "Frames").

Renders frames with ``synth sem-frames``' generator (1024 x 1024 by default, extra defects for
statistics), runs :func:`micrometry.depth.frames.analyse_frame` with the shipped model (or
``--model``) and scores:

* hole detection: recall over the true holes whose window lies clearly inside the frame (not
  ``missing``), precision over the holes found (present, window inside);
* per-hole depth against the same holes predicted from crops: (a) the hole's lattice window cut and
  predicted alone (must be identical), (b) a crop cut by hand around the hole's true centre (what a
  user does today), (c) the truth;
* defect precision and recall per class (``not_open``, ``under_etched``, ``merged``, ``missing``);
* seconds per frame on ``--threads`` torch threads (the machine's load is printed beside it).

    python bench/frames.py [--frames 6] [--size 1024] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from scipy.spatial import cKDTree

from micrometry.depth.frames import analyse_frame
from micrometry.depth.methods import load_depth_model
from micrometry.holes import WINDOW, window_origins
from micrometry.synth.sem_frames import FrameConfig, render_frame

CLASSES = ("not_open", "under_etched", "merged", "missing")


def score_frame(method, frame, seconds_out: list) -> dict:
    image, truth = frame.image, frame.holes
    started, cpu = time.perf_counter(), time.process_time()
    result = analyse_frame(method, image)
    seconds_out.append((time.perf_counter() - started, time.process_time() - cpu))
    det, holes = result.detection, result.holes
    rows, cols = image.shape
    site = np.column_stack([truth["site_x_px"], truth["site_y_px"]])
    # windows that clearly fit: the fitted site may differ from the true one by a fraction of a pixel
    half = np.array([WINDOW[1] / 2 + 0.5, WINDOW[0] / 2 + 0.5])
    clear = np.all((site - half >= 0) & (site + half <= [cols, rows]), axis=1)
    real = truth["defect"] != "missing"
    dist, match = cKDTree(site).query(det.site_xy)
    on_site = dist < 5.0
    found = det.present & det.inside
    true_holes = np.where(real & clear)[0]
    found_truth = set(match[found & on_site].tolist())
    recall = np.mean([t in found_truth for t in true_holes])
    false = int((found & ~(on_site & real[match])).sum())

    # per-hole depth: frame against (a) own lattice window alone, (b) hand-cut crop, (c) truth
    k = np.where(found & on_site & real[match] & (truth["defect"][match] == "none"))[0]
    k = k[np.isfinite(holes["depth_nm"][k])]
    own = [image[y : y + WINDOW[0], x : x + WINDOW[1]] for x, y in det.window_origin[k]]
    alone = np.array([method.predict_report(w[None])[1]["depth_nm"][0] for w in own[:40]])
    centre = np.column_stack([truth["x_px"], truth["y_px"]])[match[k]]
    hand_origin = window_origins(centre)
    ok = np.all((hand_origin >= 0) & (hand_origin + [WINDOW[1], WINDOW[0]] <= [cols, rows]), axis=1)
    hand = np.stack([image[y : y + WINDOW[0], x : x + WINDOW[1]] for x, y in hand_origin[ok]])
    hand_depth = method.predict_report(hand)[1]["depth_nm"]
    frame_depth = holes["depth_nm"][k]
    truth_depth = truth["depth_nm"][match[k]]

    defects = {}
    scored = found | (~det.present & det.inside)
    pred_class = np.where(scored, holes["defect"], "")
    for name in CLASSES:
        is_true = (truth["defect"] == name) & clear
        flagged = scored & (pred_class == name)
        tp = len(set(match[flagged & on_site].tolist()) & set(np.where(is_true)[0]))
        defects[name] = {"true": int(is_true.sum()), "flagged": int(flagged.sum()), "hit": int(tp)}
    wrong = (
        scored
        & on_site
        & (pred_class != "")
        & (pred_class != np.where(truth["defect"][match] == "none", "", truth["defect"][match]))
    )
    missed = [
        str(truth["defect"][t])
        for t in np.where(clear & (truth["defect"] != "none"))[0]
        if t not in set(match[scored & on_site & (pred_class == truth["defect"][t])].tolist())
    ]
    return {
        "holes": len(true_holes),
        "recall": float(recall),
        "false_holes": false,
        "alone_max_abs_nm": float(np.max(np.abs(alone - frame_depth[:40]))) if len(alone) else float("nan"),
        "hand_abs_nm": np.abs(hand_depth - frame_depth[ok]).tolist(),
        "truth_err_nm": (frame_depth - truth_depth).tolist(),
        "hand_truth_err_nm": (hand_depth - truth_depth[ok]).tolist(),
        "defects": defects,
        "confusions": [f"{truth['defect'][match[i]]}->{pred_class[i]}" for i in np.where(wrong)[0]],
        "missed": missed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lattice", default="staggered")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--json", default=None)
    parser.add_argument("--model", default="shipped", help="a depth model: a name or a run folder")
    parser.add_argument(
        "--tta", type=int, choices=(1, 2, 4), default=None, help="test-time flips (default: the model's)"
    )
    parser.add_argument(
        "--fill-dips", type=float, default=None, help="fill the shapes' closed dips (default: the model's)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    method = load_depth_model(args.model, device="cpu")
    if args.tta is not None:
        method.cfg.tta = args.tta
    if args.fill_dips is not None:
        method.cfg.fill_dips = args.fill_dips
    config = FrameConfig(
        height_px=args.size,
        width_px=args.size,
        lattice=args.lattice,
        n_under_etched=8,
        n_not_open=8,
        n_merged=2,
        n_missing=4,
    )
    seconds: list[float] = []
    results = []
    analyse_frame(method, render_frame(config, np.random.default_rng(0)).image)  # warm-up
    for k in range(args.frames):
        frame = render_frame(config, np.random.default_rng(args.seed + k))
        results.append(score_frame(method, frame, seconds))
        r = results[-1]
        print(
            f"frame {k}: {r['holes']} holes, recall {r['recall']:.4f}, false {r['false_holes']}, "
            f"{seconds[-1][0]:.2f} s ({seconds[-1][1]:.2f} s CPU); wrong flags {r['confusions']}, missed {r['missed']}"
        )

    holes = sum(r["holes"] for r in results)
    recall = sum(r["recall"] * r["holes"] for r in results) / holes
    hand = np.concatenate([r["hand_abs_nm"] for r in results])
    err = np.concatenate([r["truth_err_nm"] for r in results])
    hand_err = np.concatenate([r["hand_truth_err_nm"] for r in results])
    summary = {
        "frames": args.frames,
        "size_px": args.size,
        "lattice": args.lattice,
        "threads": args.threads,
        "load_average_1min": os.getloadavg()[0],
        "holes": holes,
        "detection_recall": recall,
        "false_holes": sum(r["false_holes"] for r in results),
        "frame_vs_own_window_alone_max_nm": max(r["alone_max_abs_nm"] for r in results),
        "frame_vs_hand_cut_crop_nm": {
            "median": float(np.median(hand)),
            "p95": float(np.percentile(hand, 95)),
            "within_1nm": float(np.mean(hand <= 1.0)),
        },
        "depth_rmse_vs_truth_nm": {
            "frame": float(np.sqrt(np.mean(err**2))),
            "hand_cut": float(np.sqrt(np.mean(hand_err**2))),
        },
        "seconds_per_frame": {
            "wall_median": float(np.median([w for w, _ in seconds])),
            "wall_max": float(np.max([w for w, _ in seconds])),
            "cpu_median": float(np.median([c for _, c in seconds])),
        },
        "defects": {},
    }
    for name in CLASSES:
        true = sum(r["defects"][name]["true"] for r in results)
        flagged = sum(r["defects"][name]["flagged"] for r in results)
        hit = sum(r["defects"][name]["hit"] for r in results)
        summary["defects"][name] = {
            "true": true,
            "flagged": flagged,
            "precision": hit / flagged if flagged else float("nan"),
            "recall": hit / true if true else float("nan"),
        }
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
