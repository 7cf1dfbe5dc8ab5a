"""Times each Triton kernel's launch configurations side by side (its tile and its warps), every one checked bit for
bit against the shipped configuration's output, for `gpu_check.sh profile` to say which to ship.

The three ops at the sizes of their GPU targets (issue 12): the JSMA pair search at B = 128, n = 3072 on N(0, 1)
and on equal scores (1.8e12 pairs/s wanted); bounded_relu's forward alone (90% of the copy bandwidth wanted, which
the script measures first) and both forward + backward pairs (plain and bit mask) on 2^28 float32 elements;
gaussian_augment on 10,000 CIFAR images x (10 + 1). Each row: milliseconds, throughput (pairs/s, GB/s), speed
against the shipped configuration, equality. Read offline for sm_90 (cuobjdump, triton 3.8, 2026-12-06), the JSMA
tiles of 16 rows a thread take 9.6 instructions a pair at 128 registers against the shipped tile's 11.6 at 64:
fewer instructions, half the programs resident; only a GPU can say which is faster.

    python scripts/tune_triton_tiles.py [--device cuda] [--ops jsma bounded_relu gaussian_augment] [--json FILE]
    TRITON_INTERPRET=1 python scripts/tune_triton_tiles.py --device cpu --tiny   # the equality checks alone, on a CPU

The configurations are set as the kernels' module constants for the duration of their calls (each launch reads
them then); the shipped values come back afterwards, whatever happens. The interpreter runs a program as one
thread, so on a CPU configurations that differ in warps alone are not told apart. Exit status 1 where a
configuration failed or gave another output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemesis_fast.bench.bits import same_bits  # noqa: E402
from nemesis_fast.bench.harness import copy_bandwidth_gbps, device_name, time_interleaved  # noqa: E402

Config = dict[str, object]  # module constant -> value
Case = tuple[Callable[[], object], float, str]  # the call, its work per call, the unit of that work per second


@contextlib.contextmanager
def configured(module: ModuleType, config: Config) -> Iterator[None]:
    """`module`'s constants set to `config` for the block, the shipped values back after it."""
    shipped = {name: getattr(module, name) for name in config}
    try:
        for name, value in config.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in shipped.items():
            setattr(module, name, value)


def label(config: Config) -> str:
    return " ".join(f"num_warps={v['num_warps']}" if isinstance(v, dict) else f"{k}={v}" for k, v in config.items())


def with_shipped(module: ModuleType, candidates: list[Config]) -> list[Config]:
    """The module's shipped configuration (its constants now), then the candidates that differ from it."""
    shipped = {name: getattr(module, name) for name in candidates[0]}
    return [shipped, *(c for c in candidates if c != shipped)]


def jsma_cases(device: torch.device, tiny: bool) -> tuple[ModuleType, list[Config], dict[str, Case]]:
    from nemesis_fast.triton import jsma_saliency_search as module

    # tiny: after each row block's diagonal tiles, whole column tiles of every width here (up to 128), then a part one
    batch, n = (2, 262) if tiny else (128, 3072)
    pairs = batch * n * (n - 1) / 2
    generator = torch.Generator(device="cpu").manual_seed(0)
    normal = [torch.randn(batch, n, generator=generator).to(device) for _ in range(2)]
    equal = [torch.ones(batch, n, device=device), -torch.ones(batch, n, device=device)]
    domain = torch.ones(batch, n, dtype=torch.bool, device=device)
    cases = {
        f"N(0, 1), B = {batch}, n = {n}": (
            lambda: module.jsma_saliency_search_triton(*normal, domain, True),
            pairs,
            "pairs/s",
        ),
        f"equal scores, B = {batch}, n = {n}": (
            lambda: module.jsma_saliency_search_triton(*equal, domain, True),
            pairs,
            "pairs/s",
        ),
    }
    tiles = [(32, 32, 4), (32, 32, 2), (64, 32, 4), (64, 32, 8), (32, 64, 4), (64, 64, 8), (32, 128, 4), (16, 32, 4)]
    return module, with_shipped(module, [{"ROWS": r, "COLS": c, "NUM_WARPS": w} for r, c, w in tiles]), cases


def bounded_relu_cases(device: torch.device, tiny: bool) -> tuple[ModuleType, list[Config], dict[str, Case]]:
    from nemesis_fast.triton import bounded_relu as module

    n = 20_001 if tiny else 1 << 28  # tiny: whole blocks of every size here, and a mask's last byte in part
    x = torch.randn(n, device=device)
    grad = torch.randn(n, device=device)

    def plain():
        out = module.bounded_relu_triton(x, 1.0)
        return out, module.bounded_relu_backward_triton(grad, out, 1.0)

    def masked():
        out, mask = module.bounded_relu_masked_triton(x, 1.0)
        return out, mask, module.bounded_relu_masked_backward_triton(grad, mask)

    gigabytes = n * 4 / 1e9  # one float32 pass over the elements
    cases = {  # the bytes moved: forward 8 a element, backward 12; with the mask, 8 + 1/8 and 8 + 1/8
        f"forward, {n} float32": (lambda: module.bounded_relu_triton(x, 1.0), 2 * gigabytes, "GB/s"),
        f"forward + backward, {n} float32": (plain, 5 * gigabytes, "GB/s"),
        f"save='mask' forward + backward, {n} float32": (masked, 4.0625 * gigabytes, "GB/s"),
    }
    blocks = [(4096, 512, 8), (1024, 128, 4), (2048, 256, 4), (2048, 256, 8), (4096, 512, 4), (8192, 1024, 8)]
    blocks += [(8192, 1024, 16), (16384, 2048, 16)]
    return module, with_shipped(module, [{"BLOCK": b, "BYTES": m, "NUM_WARPS": w} for b, m, w in blocks]), cases


def gaussian_augment_cases(device: torch.device, tiny: bool) -> tuple[ModuleType, list[Config], dict[str, Case]]:
    from nemesis_fast.triton import gaussian_augment as module

    cases = {}
    # tiny: 675 features (the one-feature kernel) and 768 (four features at a time, as CIFAR's 3,072 take)
    for images, size, copies in [(4, 15, 2), (4, 16, 2)] if tiny else [(10_000, 32, 10)]:
        x = torch.rand(images, 3, size, size, generator=torch.Generator(device="cpu").manual_seed(0)).to(device)
        written = x.numel() * (copies + 1) * 4 / 1e9

        def augment(x=x, copies=copies):
            return module.gaussian_augment_triton(x, copies, 0.3, 0.0, 1.0, True, 1, 0, None)

        cases[f"{images} images of 3x{size}x{size} x ({copies} + 1), float32"] = (augment, written, "GB written/s")
    options = module.LAUNCH_OPTIONS
    settings = [(256, 4), (128, 4), (256, 8), (512, 4), (512, 8), (1024, 8)]
    configs = [{"BLOCK": b, "LAUNCH_OPTIONS": {**options, "num_warps": w}} for b, w in settings]
    return module, with_shipped(module, configs), cases


OPS = {"jsma": jsma_cases, "bounded_relu": bounded_relu_cases, "gaussian_augment": gaussian_augment_cases}
TRITON_OPS = frozenset(OPS)  # the ops whose kernels need a GPU or the interpreter


def sweep(op: str, device: torch.device, tiny: bool) -> list[dict[str, object]]:
    """One row per (case, configuration): its median milliseconds and throughput, its speed against the shipped
    configuration's (the first), whether its output equals the shipped one's bit for bit, and why it failed."""
    module, configs, cases = OPS[op](device, tiny)
    rows = []
    for case, (call, work, unit) in cases.items():
        providers, equal, failures = {}, {}, {}
        try:
            with configured(module, configs[0]):
                expected = call()
        except Exception as error:  # the shipped configuration itself: nothing to compare with, the others not run
            failures = {label(c): "not run: the shipped configuration failed" for c in configs[1:]}
            failures[label(configs[0])] = f"failed: {type(error).__name__}: {error}"
            configs_run = []
        else:
            configs_run = configs
        for config in configs_run:
            name = label(config)
            try:
                with configured(module, config):
                    equal[name] = same_bits(call(), expected)
            except Exception as error:  # a configuration Triton cannot compile or launch: a row that says why
                failures[name] = f"failed: {type(error).__name__}: {error}"
                continue

            def timed(config=config, call=call):
                with configured(module, config):
                    call()

            providers[name] = timed
        times = {} if tiny or not providers else time_interleaved(providers, device, failures=failures)
        shipped = times.get(label(configs[0]))
        for config in configs:
            name = label(config)
            ms = times.get(name)
            rows.append(
                {
                    "op": op,
                    "case": case,
                    "config": name,
                    "shipped": config is configs[0],
                    "ms": ms,
                    "throughput": work / (ms / 1e3) if ms else None,
                    "unit": unit,
                    "vs_shipped": shipped / ms if ms and shipped else None,
                    "equal": equal.get(name),
                    "note": failures.get(name),
                }
            )
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| op | case | configuration | ms | throughput | vs shipped | equal |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = f"{r['ms']:.4g}" if r["ms"] is not None else (r["note"] or "-")
        rate = f"{r['throughput']:.4g} {r['unit']}" if r["throughput"] is not None else "-"
        speed = f"{r['vs_shipped']:.3f}x" if r["vs_shipped"] is not None else "-"
        mark = " (shipped)" if r["shipped"] else ""
        lines.append(f"| {r['op']} | {r['case']} | {r['config']}{mark} | {ms} | {rate} | {speed} | {r['equal']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """0 when every configuration ran and gave the shipped output; 1 otherwise (the rows and stderr say which)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ops", nargs="+", choices=tuple(OPS), default=list(OPS))
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, not timed (the CPU's interpreter): equality")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if TRITON_OPS & set(args.ops) and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        print(
            f"tune_triton_tiles.py: Triton runs on a GPU, or on a CPU through its interpreter: on {device}, run with "
            "TRITON_INTERPRET=1 (set before Python starts) and --tiny",
            file=sys.stderr,
        )
        return 2
    report = {"device": device_name(device), "rows": []}
    if not args.tiny:
        report["copy_GB_per_s"] = copy_bandwidth_gbps(device)
        print(f"{report['device']}: copy bandwidth {report['copy_GB_per_s']:.1f} GB/s (bytes read + written)")
    rows = report["rows"]
    for op in args.ops:  # the JSON rewritten after each op: a run stopped at its limit keeps the ops it finished
        rows += sweep(op, device, args.tiny)
        print(table([r for r in rows if r["op"] == op]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    wrong = [  # a configuration that failed while timed has a note beside its equal output
        f"{r['op']}: {r['case']}: {r['config']}: {r['note'] or 'another output'}"
        for r in rows
        if not r["equal"] or r["note"]
    ]
    if wrong:
        print(
            "configurations that failed or gave another output than the shipped one:\n  " + "\n  ".join(wrong),
            file=sys.stderr,
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
