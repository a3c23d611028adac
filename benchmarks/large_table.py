"""`medpriv run` on a large table (synthetic:100000, about 66,000 patients) with every default
method and attack, end to end as a user starts it: wall time and peak memory of the process,
and per run the training and attack seconds from results.json. Targets (issue 17, 2 cores):
at most 15 minutes and a peak resident memory under 4 GB.

    .venv/bin/python benchmarks/large_table.py
    .venv/bin/python benchmarks/large_table.py --data synthetic:30000 --methods baseline,hgb

Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 15 * 60
TARGET_PEAK_GB = 4.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic:100000")
    parser.add_argument("--methods", default=None, help="default: medpriv's default methods")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "medpriv.cli", "run", "--no-progress", "--out", out]
        command += ["--data", args.data]
        if args.methods:
            command += ["--methods", args.methods]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        # ru_maxrss of the waited-for children, in KiB on Linux
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        document = json.loads(next(Path(out).glob("*/results.json")).read_text())
    runs = {}
    print(
        f"{args.data}: {document['dataset']['n_units']:,} units, {seconds:.0f} s, "
        f"peak {peak_gb:.2f} GB (targets {TARGET_SECONDS} s, {TARGET_PEAK_GB} GB)"
    )
    print(f"  {'run':<22} {'AUROC':>6} {'train s':>8} {'attack s':>9}")
    for run in document["runs"]:
        cost = run["cost"]
        runs[run["name"]] = {
            "train_seconds": round(cost["train_seconds"], 1),
            "attack_seconds": round(cost.get("attack_seconds", 0.0), 1),
        }
        print(
            f"  {run['name']:<22} {run['utility']['auroc']:>6.3f} "
            f"{cost['train_seconds']:>8.1f} {cost.get('attack_seconds', 0):>9.1f}"
        )
    result = {
        "data": args.data,
        "n_units": document["dataset"]["n_units"],
        "seconds": round(seconds, 1),
        "share_of_target": round(seconds / TARGET_SECONDS, 2),
        "peak_gb": round(peak_gb, 2),
        "runs": runs,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
