"""DeepFool's overshoot: scales the accumulated perturbation at every iterate
(x_i = clip(x + (1 + overshoot) * r_total)), which a linear model (one step) cannot tell from an overshoot on the
last step alone. A reference on a smooth model that needs several steps."""

from __future__ import annotations

import torch
from torch import nn

from nemesis_fast.attacks import DeepFool


def _model() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 2)
    return model.eval()


def _reference(model, x, y, max_iter, overshoot, margin=1e-4):
    out, steps = x.clone(), torch.zeros(len(x), dtype=torch.int64)
    for i in range(len(x)):
        r_total = torch.zeros_like(x[i : i + 1])
        xi = x[i : i + 1]
        for _ in range(max_iter):
            leaf = xi.clone().requires_grad_(True)
            logits = model(leaf)[0]
            if logits.argmax() != y[i]:
                break
            best = None
            for k in range(logits.numel()):
                if k == y[i]:
                    continue
                f = logits[k] - logits[y[i]]
                (w,) = torch.autograd.grad(f, leaf, retain_graph=True)
                d = f.abs().item() / w.norm().item()
                if best is None or d < best[0]:
                    best = (d, w)
            d, w = best
            r_total = r_total + (d + margin) * w / w.norm()
            xi = (x[i : i + 1] + (1 + overshoot) * r_total).clamp(0, 1).detach()
            steps[i] += 1
        out[i] = xi[0]
    return out, steps


def test_deepfool_overshoot_scales_the_accumulated_perturbation_at_every_step():
    model = _model()
    x = 0.3 + 0.4 * torch.rand(16, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    expected, steps = _reference(model, x, y, max_iter=10, overshoot=0.3)
    assert (steps > 1).any()  # some images need several steps: the case a linear model cannot show
    result = DeepFool(model, max_iter=10, overshoot=0.3).run(x, y)
    torch.testing.assert_close(result.x_adv, expected, rtol=0, atol=1e-9)
    assert torch.equal(result.iterations, steps)
