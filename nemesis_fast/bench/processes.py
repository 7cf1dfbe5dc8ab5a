"""The default evaluation (`nemesis-fast evaluate`: the quick preset on the shipped MNIST sample) on one process
and on N processes under torchrun, side by side: wall time, the training and attack phases, and the ratio.

    python -m nemesis_fast.bench.processes [--nproc 2] [--repeats 1] [--json FILE] [-- EVALUATE ARGUMENTS]

Every run starts from an empty output folder (nothing cached: training included) and runs alternate (1, N, 1,
N...), so that load from elsewhere on the machine falls on both alike; the medians are reported. Arguments
after `--` go to every `nemesis-fast evaluate` (e.g. `-- --device cpu --threads 2`). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .harness import Report, Row


def evaluate_command(processes: int, out: Path, extra: Sequence[str]) -> list[str]:
    """`nemesis-fast evaluate` writing to `out`, on one process or under torchrun on `processes`."""
    cli = ["-m", "nemesis_fast.cli", "evaluate", "--no-progress", "--out", str(out), *extra]
    if processes == 1:
        return [sys.executable, *cli]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *cli]


def timed_run(processes: int, out: Path, extra: Sequence[str]) -> dict[str, Any]:
    """One evaluation from scratch: its wall time (s), phases (s), threads, and table cells."""
    started = time.perf_counter()
    run = subprocess.run(evaluate_command(processes, out, extra), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"the evaluation on {processes} process(es) failed:\n{run.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    return {
        "wall": wall,
        "training": results["seconds"]["training (cached or run)"],
        "attacks": results["seconds"]["attacks"],
        "threads": results["threads"],
        "cells": [(c["defense"], c["attack"], c["setting"], c["eps"], c["accuracy"]) for c in results["cells"]],
    }


def run(nproc: int = 2, repeats: int = 1, extra: Sequence[str] = ()) -> Report:
    """Times the evaluation `repeats` times on one process and on `nproc`; returns the two rows."""
    if nproc < 2 or repeats < 1:
        raise ValueError(f"nproc must be >= 2 and repeats >= 1, got nproc={nproc}, repeats={repeats}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = Report(f"nemesis-fast evaluate {' '.join(extra)}".rstrip(), device, settings={"extra": list(extra)})
    runs: dict[int, list[dict[str, Any]]] = {1: [], nproc: []}
    with tempfile.TemporaryDirectory(prefix="nemesis-processes-") as folder:
        for i in range(repeats):
            for processes in runs:
                out = Path(folder) / f"{processes}-{i}"
                runs[processes].append(timed_run(processes, out, extra))
                print(f"{processes} process(es), run {i + 1}: {runs[processes][-1]['wall']:.1f} s", file=sys.stderr)
    base = statistics.median(r["wall"] for r in runs[1])
    same = runs[1][0]["cells"] == runs[nproc][0]["cells"]
    for processes, measured in runs.items():
        wall = statistics.median(r["wall"] for r in measured)
        extra_figures = {k: statistics.median(r[k] for r in measured) for k in ("training", "attacks")} | {
            "threads": measured[0]["threads"],
            "repeats": len(measured),
        }
        note = "" if processes == 1 else f"wall {wall / base:.2f}x one process's; same table: {'yes' if same else 'no'}"
        name = "1 process" if processes == 1 else f"{processes} processes (torchrun)"
        report.add(Row("evaluate", name, 1e3 * wall, speedup=base / wall, note=note, extra=extra_figures))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nemesis_fast.bench.processes", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--nproc", type=int, default=2, help="processes of the torchrun run (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (default 1)")
    parser.add_argument("--json", help="also write the report to this JSON file")
    parser.add_argument(
        "evaluate_args", nargs=argparse.REMAINDER, help="'--', then the arguments of nemesis-fast evaluate"
    )
    args = parser.parse_args(argv)
    extra = args.evaluate_args[1:] if args.evaluate_args[:1] == ["--"] else args.evaluate_args
    try:
        report = run(args.nproc, args.repeats, extra)
    except ValueError as error:
        raise SystemExit(f"{parser.prog}: {error}") from error
    print(report.table())
    if args.json:
        report.write_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
