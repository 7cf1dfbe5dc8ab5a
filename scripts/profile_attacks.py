"""Where an attack's time goes on a GPU, for the attack suite's CIFAR CNN and batch (`nemesis-fast bench attacks`):
per provider (nemesis_fast, torchattacks, the bare forward and backward passes), the milliseconds per call, the
operations that synchronise the host with the device (where each happens, from torch's sync debug mode), and
torch.profiler's busiest operations by host time and by device time. Then the same for torchattacks' JSMA through the
drop-in on 2 images (the compat suite's case, 26x the peer on an H200 against a 50x target); the K vector-Jacobian
products of DeepFool and JSMA taken four ways (one vmap'd backward pass, K backward passes, one pass over K stacked
copies, torch.func's vmap of a vjp) at several batch sizes, to set where each path is taken, for the CNN and for it
with BReLU (whose op pair's batching rules should make its vmap'd pass cost ReLU's); and DeepFool's difference from
torchattacks' with TF32 allowed (torch's default for cuDNN convolutions) and forbidden.

    python scripts/profile_attacks.py [--attacks FGSM,DeepFool,JSMA] [--batch 256] [--calls 20] [--device cpu] \
        > profile.log

(`--device cpu`: a smoke test of the script, with no synchronisations to find and no TF32.)
"""

from __future__ import annotations

import argparse
import collections
import copy
import time
import traceback
import warnings
from functools import partial

import torch
from torch.profiler import ProfilerActivity, profile

from nemesis_fast.attacks.jacobian import LogitJacobian
from nemesis_fast.bench.attacks import providers, specs, timing_model
from nemesis_fast.bench.harness import device_name, synchronize
from nemesis_fast.compat import torchattacks as compat
from nemesis_fast.nn import replace_relu


def synchronisations(call) -> collections.Counter:
    """The places in nemesis_fast or the peers (file:line) of the synchronising operations of one call."""
    places: collections.Counter = collections.Counter()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
            torch.cuda.synchronize()
        for warning in caught:
            if "synchroniz" in str(warning.message):
                places[f"{warning.filename}:{warning.lineno}"] += 1
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return places


def milliseconds(call, calls: int, device: torch.device) -> float:
    call()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(calls):
        call()
    synchronize(device)
    return 1e3 * (time.perf_counter() - started) / calls


def profile_attack(spec, model, x, y, calls: int) -> None:
    for name, attack in providers(spec, model, x, 10).items():
        if isinstance(attack, str) or name == "ART":
            continue
        profile_call(f"{spec.name}, {name}", lambda a=attack: a(x, y), x.device, calls, len(x))


def profile_call(label: str, call, device: torch.device, calls: int, batch: int) -> None:
    """Milliseconds per call, synchronisations and busiest operations of `call`."""
    gpu = device.type == "cuda"
    print(f"\n=== {label}: {milliseconds(call, calls, device):.3f} ms per call (batch {batch})")
    for place, count in (synchronisations(call) if gpu else collections.Counter()).most_common(10):
        print(f"  sync x{count} at {place}")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            call()
        synchronize(device)
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=12))
    if gpu:
        print(averages.table(sort_by="self_cuda_time_total", row_limit=8))


def profile_jsma(model, x, y) -> None:
    """torchattacks' JSMA through the drop-in on `x`: per call and per step (one model call a step)."""
    attack = compat.JSMA(model, theta=1.0, gamma=0.1)
    steps = []
    hook = model.register_forward_hook(lambda *_: steps.append(1))
    try:
        attack(x, y)
    finally:
        hook.remove()
    print(f"\nJSMA (drop-in): {len(steps)} steps a call on {len(x)} images")
    profile_call("JSMA, nemesis_fast.compat.torchattacks", lambda: attack(x, y), x.device, 3, len(x))


def jacobian_paths(model, x, label: str) -> None:
    """Milliseconds per call of the K products of the logits, each of LogitJacobian's three paths, and a fourth:
    autograd's `is_grads_batched` (the vmap'd pass) runs the legacy vmap, which has no batching rule for the
    convolution's and max-pooling's backward and loops over the K products there (then stacks them); torch.func's
    vmap folds the K products into the batch of one backward call."""

    def vmapped(w):
        leaf = x[: w.shape[1]].detach().requires_grad_(True)
        return torch.autograd.grad(model(leaf), leaf, w, is_grads_batched=True)

    def per_product(w):
        leaf = x[: w.shape[1]].detach().requires_grad_(True)
        logits = model(leaf)
        return [torch.autograd.grad(logits, leaf, w[i], retain_graph=i < len(w) - 1) for i in range(len(w))]

    def func_vmapped(w):
        _, products = torch.func.vjp(model, x[: w.shape[1]])
        return torch.func.vmap(products)(w)

    print(
        f"\nK products of the logits ({label}), ms per call: one vmap'd pass / K passes / K stacked copies / "
        "torch.func's vmap of a vjp"
    )
    for images, k in ((2, 2), (8, 2), (2, 10), (32, 10), (256, 2), (256, 10)):
        if images > len(x):
            continue
        w = torch.randn(k, images, 10, device=x.device)
        paths = (
            partial(vmapped, w),
            partial(per_product, w),
            partial(LogitJacobian._stacked, model, x[:images], w),
            partial(func_vmapped, w),
        )
        times = " / ".join(f"{milliseconds(path, 10, x.device):.3f}" for path in paths)
        print(f"  B = {images}, K = {k}: {times}")


def deepfool_tf32(model, x, y) -> None:
    import torchattacks

    for allowed in (True, False):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.manual_seed(0)
        peer = torchattacks.DeepFool(model, steps=50, overshoot=0.02)(x, y)
        torch.manual_seed(0)
        ours = compat.DeepFool(model, steps=50, overshoot=0.02)(x, y)
        print(
            f"DeepFool, TF32 {'allowed' if allowed else 'forbidden'}: max |ours - torchattacks| "
            f"{(ours - peer).abs().max().item():.3g} on {len(x)} images"
        )
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default="FGSM,DeepFool,JSMA")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = timing_model(device)
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    print(f"{device_name(device)}, torch {torch.__version__}")
    wanted = args.attacks.split(",")
    for spec in specs("cifar", "cuda"):
        if spec.name in wanted:
            try:
                calls = args.calls if spec.name in ("FGSM", "R+FGSM") else 3
                images = 32 if spec.name == "DeepFool" else len(x)
                profile_attack(spec, model, x[:images], y[:images], calls)
            except Exception:  # one attack's failure must not hide the others' profiles
                traceback.print_exc()
    try:
        if "JSMA" in wanted:
            profile_jsma(model, x[:2], y[:2])
        jacobian_paths(model, x, "ReLU")
        # BReLU's op pair has batching rules: its vmap'd pass should cost what ReLU's does.
        jacobian_paths(replace_relu(copy.deepcopy(model), 1.0), x, "the same weights, BReLU t = 1")
    except Exception:
        traceback.print_exc()
    if device.type == "cuda":
        deepfool_tf32(model, x[:32], y[:32])


if __name__ == "__main__":
    main()
