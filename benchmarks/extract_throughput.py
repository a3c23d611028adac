"""Throughput and peak memory of the MIMIC-III extractor on synthetic tables.

Generates synthetic MIMIC-III CSVs (medpriv.data.synthetic) into a temporary directory, then runs
`medpriv.data.mimic3.extract_mimic3` in a child process, so that the child's peak resident memory
is the extractor's alone. Prints a table and, as the last line, one JSON object.

    .venv/bin/python benchmarks/extract_throughput.py            # ~5.4M chart rows
    .venv/bin/python benchmarks/extract_throughput.py --stays 2000 --keep

Targets (not enforced here): at least 1M chart rows per second, peak RSS under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medpriv.data.synthetic import write_synthetic_mimic

DEFAULT_STAYS = 16_000  # ~340 chart rows per stay: CHARTEVENTS has over 5,000,000 rows

# Runs in the child: time only the extraction call, report on the last stdout line.
CHILD = """
import json, sys, time
from pathlib import Path
from medpriv.data.mimic3 import extract_mimic3
directory, window = Path(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
data = extract_mimic3(directory, window_hours=window)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "cohort_rows": len(data),
                  "positive_rate": float(data.labels.mean()) if len(data) else None}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stays", type=int, default=DEFAULT_STAYS, help="ICU stays to generate")
    parser.add_argument("--window-hours", type=int, default=24, choices=(24, 48))
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--keep", action="store_true", help="keep the generated directory")
    return parser.parse_args(argv)


def generate(directory: Path, stays: int, seed: int) -> tuple[dict[str, int], float]:
    """Write the synthetic tables; return rows per table and seconds taken."""
    start = time.perf_counter()
    counts = write_synthetic_mimic(directory, n_stays=stays, seed=seed)
    return counts, time.perf_counter() - start


def extract_in_child(directory: Path, window_hours: int) -> tuple[dict, float, float]:
    """(child's report, child wall seconds, child peak RSS in MB)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), str(window_hours)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"extraction failed in the child process (exit {done.returncode})")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB on Linux
    return json.loads(done.stdout.strip().splitlines()[-1]), wall, peak_kb / 1024


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="medpriv-bench-"))
    try:
        counts, generate_seconds = generate(directory, args.stays, args.seed)
        report, child_wall, peak_mb = extract_in_child(directory, args.window_hours)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    chart_rows = counts["CHARTEVENTS"]
    result = {
        "chartevents_rows": chart_rows,
        "labevents_rows": counts["LABEVENTS"],
        "icu_stays": counts["ICUSTAYS"],
        "seconds": round(report["seconds"], 3),
        "rows_per_second": round(chart_rows / report["seconds"]),
        "peak_rss_mb": round(peak_mb, 1),
        "cohort_rows": report["cohort_rows"],
        "positive_rate": report["positive_rate"],
        "child_wall_seconds": round(child_wall, 3),
        "generate_seconds": round(generate_seconds, 3),
        "window_hours": args.window_hours,
        "directory": str(directory) if args.keep else None,
    }
    lines = [
        ("ICU stays generated", f"{counts['ICUSTAYS']:,}"),
        ("generation", f"{generate_seconds:.1f} s"),
        ("CHARTEVENTS rows", f"{chart_rows:,}"),
        ("LABEVENTS rows", f"{counts['LABEVENTS']:,}"),
        ("extraction (in child)", f"{report['seconds']:.2f} s"),
        ("child process wall", f"{child_wall:.2f} s (with interpreter start and imports)"),
        ("chart rows per second", f"{result['rows_per_second']:,}  (target >= 1,000,000)"),
        ("child peak RSS", f"{peak_mb:,.0f} MB  (target < 2,048 MB)"),
        ("cohort rows", f"{report['cohort_rows']:,}"),
    ]
    if args.keep:
        lines.append(("tables kept in", str(directory)))
    width = max(len(name) for name, _ in lines)
    for name, value in lines:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
