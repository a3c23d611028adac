"""Wall time of `medpriv run` (the default comparison) and `medpriv run --quick`, end to end.

Each command runs as a fresh process, as a user would start it (imports, data, training,
attacks, report), one after the other on this machine; the targets are 300 s and 60 s on 2
cores. Prints per-run training and attack seconds from results.json, then one JSON line with
`default_s`, `quick_s`, and each as a share of its target.

    .venv/bin/python benchmarks/default_run.py            # both
    .venv/bin/python benchmarks/default_run.py --only quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"default": 300.0, "quick": 60.0}


def timed_run(kind: str, out: Path) -> tuple[float, dict]:
    args = [sys.executable, "-m", "medpriv.cli", "run", "--no-progress", "--out", str(out)]
    if kind == "quick":
        args.append("--quick")
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    document = json.loads(next(out.glob("*/results.json")).read_text())
    return seconds, document


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(TARGETS))
    args = parser.parse_args(argv)
    found: dict[str, float] = {}
    for kind in [args.only] if args.only else ["default", "quick"]:
        with tempfile.TemporaryDirectory() as out:
            seconds, document = timed_run(kind, Path(out))
        found[kind] = seconds
        print(f"\n{kind}: {seconds:.1f} s (target {TARGETS[kind]:.0f} s)")
        print(f"  {'run':<22} {'AUROC':>6} {'train s':>8} {'attack s':>9}")
        for run in document["runs"]:
            cost = run["cost"]
            print(
                f"  {run['name']:<22} {run['utility']['auroc']:>6.3f} "
                f"{cost['train_seconds']:>8.1f} {cost.get('attack_seconds', 0):>9.1f}"
            )
    result = {f"{kind}_s": round(s, 1) for kind, s in found.items()}
    result |= {f"{kind}_share_of_target": round(s / TARGETS[kind], 2) for kind, s in found.items()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
