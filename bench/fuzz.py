"""Long fuzz run of every command with hostile and clumsy inputs (issue 13).

Draws N cases round-robin from the four generators of ``tests/fuzz_corpus.py``
(malformed images, COCO mutations, hostile model files, random option values),
runs each in a forked child under ``RLIMIT_AS`` (3 GiB) and prints, per kind,
how many cases ran and how many broke the contract (exit code other than 0/2,
a traceback, a temporary or partial output left behind, an output left by a
failed run, code run from a model file, a time-out), then every break with its
command line. Peak memory is the child's maximum resident set (it includes the
~0.4 GB of modules the parent imported before forking). Run::

    PYTHONPATH=src .venv/bin/python bench/fuzz.py 5000 [--seed S] [--jobs 2] [--keep DIR]

Exit code 1 when any case broke the contract.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("MICROMETRY_QUIET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz_corpus  # noqa: E402

# Breaks that another branch fixes (issue 13 item 1, weights_only loading: branch lifecycle):
# counted in their own column, not in "breaks".
ELSEWHERE = ("code from a model file ran",)


def _in_scope(breaks: list[str]) -> list[str]:
    return [b for b in breaks if b not in ELSEWHERE]


def _worker(args: tuple) -> list[dict]:
    """One share of the cases (a separate process: seeds and pre-imports of its own)."""
    seeds_root, scratch, n, seed, offset = args
    fuzz_corpus.preload()
    seeds = fuzz_corpus.build_seeds(Path(seeds_root))
    rows = []
    for o in fuzz_corpus.fuzz(seeds, Path(scratch), n, seed=seed):
        rows.append(
            {
                "kind": o.case.kind,
                "name": o.case.name,
                "argv": o.case.argv,
                "code": o.code,
                "seconds": o.seconds,
                "rss": o.peak_rss_mb,
                "breaks": o.breaks,
                "stderr": o.stderr[-600:],
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=400, help="cases in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (each forks its cases)")
    parser.add_argument("--keep", type=Path, help="scratch folder to keep (default: a temporary one)")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="micrometry-fuzz-"))
    started = time.perf_counter()
    shares = [args.n // args.jobs + (1 if j < args.n % args.jobs else 0) for j in range(args.jobs)]
    tasks = [
        (scratch / f"seeds{j}", scratch / f"w{j}", share, args.seed * 1000 + j, j)
        for j, share in enumerate(shares)
    ]
    if args.jobs == 1:
        rows = _worker(tasks[0])
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = [r for part in pool.map(_worker, tasks) for r in part]
    wall = time.perf_counter() - started

    by_kind: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    print(
        f"fuzz: {len(rows)} cases, seed {args.seed}, {args.jobs} job(s), {wall:.0f} s wall, "
        f"memory limit {fuzz_corpus.MEMORY_LIMIT_BYTES / 1024**3:.0f} GiB beyond the runner's (RLIMIT_AS)"
    )
    header = (
        f"{'kind':<8} {'cases':>6} {'exit 0':>7} {'exit 2':>7} {'breaks':>7} {'code ran*':>10} "
        f"{'median s':>9} {'peak RSS MB (median/max)':>25}"
    )
    print(header)
    print("-" * len(header))
    for kind in fuzz_corpus.KINDS + tuple(k for k in by_kind if k not in fuzz_corpus.KINDS):
        part = by_kind.get(kind, [])
        if not part:
            continue
        codes = Counter(r["code"] for r in part)
        secs = sorted(r["seconds"] for r in part)
        rss = sorted(r["rss"] for r in part)
        broke = sum(bool(_in_scope(r["breaks"])) for r in part)
        ran = sum(ELSEWHERE[0] in r["breaks"] for r in part)
        print(
            f"{kind:<8} {len(part):>6} {codes.get(0, 0):>7} {codes.get(2, 0):>7} {broke:>7} {ran:>10} "
            f"{secs[len(secs) // 2]:>9.2f} {rss[len(rss) // 2]:>12.0f} / {rss[-1]:<10.0f}"
        )
    total_broke = sum(bool(_in_scope(r["breaks"])) for r in rows)
    total_ran = sum(ELSEWHERE[0] in r["breaks"] for r in rows)
    all_rss = max(r["rss"] for r in rows)
    print(
        f"{'all':<8} {len(rows):>6} {'':>7} {'':>7} {total_broke:>7} {total_ran:>10} {'':>9} "
        f"{'max':>12} {all_rss:<10.0f}"
    )
    print(
        "* code ran: cases where a hostile model file executed code; must be 0 (model files are read with "
        "weights_only loading or safetensors)"
    )
    kinds_of_break = Counter(b.split(" after")[0] for r in rows for b in r["breaks"])
    if kinds_of_break:
        print(
            "\nbreaks by contract clause: " + ", ".join(f"{k}: {v}" for k, v in kinds_of_break.most_common())
        )
        broken = [r for r in rows if _in_scope(r["breaks"])]
        ran = [r for r in rows if r["breaks"] and not _in_scope(r["breaks"])]
        print(f"\ncases that broke the contract ({len(broken)}, first 100):")
        for r in broken[:100] + ran[:3]:
            last = [line for line in r["stderr"].splitlines() if line.strip()][-1:] or [""]
            print(
                f"  [{r['kind']}] {r['name'][:110]}\n      argv: {' '.join(r['argv'])[:200]}\n"
                f"      {'; '.join(r['breaks'])} | {last[0][:150]}"
            )
        if ran:
            print(f"  ... and {len(ran)} cases where only code ran from a model file (up to 3 shown above)")
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"\ncases that broke the contract are kept under {scratch}")
    return 1 if total_broke or total_ran else 0


if __name__ == "__main__":
    sys.exit(main())
