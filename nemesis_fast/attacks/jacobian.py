"""Many vector-Jacobian products of a model's logits from one forward pass: the gradients that DeepFool and JSMA
take of several classes at once.

For images x (B, ...) with logits (B, C) and weights (K, B, C), the K products are
grads[k, b] = d(sum_c weights[k, b, c] * logits[b, c]) / dx[b], one batched backward pass (autograd with
is_grads_batched). On a CPU, from PER_PRODUCT_BACKWARD_MIN = 128 products of images (K * B), they come instead
from K backward passes through the one forward graph: there vmap's batched convolution and ReLU backward are
slower (the CIFAR CNN, K = 10: 1.4x at B = 16, 1.7-1.8x at B = 64 and 128; about equal at K = 2, B = 64). Where
the model has an op without a batching rule, they come from one forward and one backward pass over K stacked
copies of x.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Weights = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
PER_PRODUCT_BACKWARD_MIN = 128  # K * B from which a CPU takes K backward passes instead of one batched pass

NO_GRADIENT_PATH = (
    "model: its output does not depend on x through autograd (it detaches its input, or computes outside torch's "
    "autograd), so the attack's gradient with respect to x does not exist; give a model differentiable in its "
    "input (for a non-differentiable step, a straight-through one: x + (step(x) - x).detach())"
)


def input_grad(
    outputs: torch.Tensor, leaf: torch.Tensor, grad_outputs: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor:
    """torch.autograd.grad(outputs, leaf, grad_outputs, **kwargs)[0], with a ValueError naming the model where
    `outputs` has no gradient path to `leaf` (torch's own error does not say why), or a RuntimeError where the
    caller's torch.inference_mode() made autograd record nothing."""
    if not outputs.requires_grad:
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "the attack needs gradients, which autograd does not record inside torch.inference_mode(): call the "
                "attack outside inference mode (the classes of nemesis_fast.attacks also run inside it)"
            )
        raise ValueError(NO_GRADIENT_PATH)
    (grad,) = torch.autograd.grad(outputs, leaf, grad_outputs, allow_unused=True, **kwargs)
    if grad is None:
        raise ValueError(NO_GRADIENT_PATH)
    return grad


class LogitJacobian:
    """The vector-Jacobian products of `logits` (a function mapping (B, ...) images to (B, C) logits), or of the
    `logits` given to each call (an attack passes its own bound method per call: held here, it would make every
    attack a reference cycle, and keep its model alive until the cyclic garbage collector runs)."""

    per_product = True  # a class default as well: an attack pickled before this flag existed loads with it

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.logits = logits
        self.use_vmap = True  # turned off for good at the first op without a batching rule
        self.per_product = True  # turned off for good by a backward that runs once per forward (torch.compile's)

    def products(
        self, x: torch.Tensor, weights: Weights, logits_of: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, C), grads (K, B, ...)). `weights` is a (K, B, C) tensor, or a function of the detached
        logits returning one; `logits_of`: the logits' function (default: the one given at construction)."""
        logits_of = self._function(logits_of)
        with torch.enable_grad():
            if self.use_vmap:
                leaf = x.detach().requires_grad_(True)
                logits = logits_of(leaf)
                grads = self._backward_products(logits, leaf, _resolve(weights, logits))
                if grads is not None:
                    return logits.detach(), grads
            return self._stacked(logits_of, x, weights)

    def products_of_kept(
        self,
        x: torch.Tensor,
        weights: Weights,
        keep: Callable[[torch.Tensor], torch.Tensor],
        logits_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (B, C), mask (B,), rows (kept,), grads (K, kept, ...)): the products of the images that `keep` (a
        function of the detached logits (B, C), returning a (B,) bool mask) keeps, in order, and their row indices
        (int64: indexing with them, unlike with the mask, needs no host synchronisation); `weights` and `logits_of`
        as for :meth:`products`, over all B images.

        For iterative attacks that stop an image once the logits at its new point say so: the forward pass that
        tells which images stop is the one whose graph the others' products use. The K products of the stopped
        images are skipped whenever they would cost more than a second forward pass of the kept ones.
        """
        logits_of = self._function(logits_of)
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(self.use_vmap)
            logits = logits_of(leaf)
            mask = keep(logits.detach())
            w = _resolve(weights, logits)
            index = mask.nonzero().squeeze(1)
            kept, stopped = index.numel(), x.shape[0] - index.numel()
            if kept == 0:
                return logits.detach(), mask, index, x.new_empty((w.shape[0], 0, *x.shape[1:]))
            if self.use_vmap and w.shape[0] * stopped < kept:
                # Few stopped images: their products cost less than a second forward pass of the others.
                grads = self._backward_products(logits, leaf, w)
                if grads is not None:
                    return logits.detach(), mask, index, grads[:, index] if stopped else grads
            _, grads = self.products(x[index], w[:, index], logits_of)
            return logits.detach(), mask, index, grads

    def _function(self, logits_of: Callable[[torch.Tensor], torch.Tensor] | None) -> Callable:
        if logits_of is not None:
            return logits_of
        if self.logits is None:
            raise TypeError("LogitJacobian: give the logits' function at construction or to each call")
        return self.logits

    def _backward_products(
        self, logits: torch.Tensor, leaf: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor | None:
        """The K products through the graph of `logits` (on a CPU from PER_PRODUCT_BACKWARD_MIN products of images,
        K backward passes), or None where an op has no batching rule (vmap off) or the backward runs only once."""
        k, b = weights.shape[:2]
        if leaf.device.type == "cpu" and k * b >= PER_PRODUCT_BACKWARD_MIN and self.per_product:
            w = weights.to(logits.dtype)
            try:
                return torch.stack([input_grad(logits, leaf, w[i], retain_graph=i < k - 1) for i in range(k)])
            except RuntimeError as error:
                if "retain_graph" not in str(error):
                    raise
                # A compiled model's backward (AOTAutograd's donated buffers) refuses retain_graph: from now on one
                # batched pass; this time the caller's fallback, after a fresh forward pass.
                self.per_product = False
                return None
        try:  # input_grad's ValueError (no gradient path to x) is no missing batching rule: it propagates
            return input_grad(logits, leaf, weights.to(logits.dtype), is_grads_batched=True)
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, NotImplementedError):
            self.use_vmap = False
            return None

    @staticmethod
    def _stacked(logits_of: Callable, x: torch.Tensor, weights: Weights) -> tuple[torch.Tensor, torch.Tensor]:
        """The K products from one forward and one backward pass over K stacked copies of x."""
        if isinstance(weights, torch.Tensor):
            w = weights
        else:
            with torch.no_grad():
                w = weights(logits_of(x))
        k, b = w.shape[0], x.shape[0]
        leaf = x.detach().unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:]).requires_grad_(True)
        stacked = logits_of(leaf).view(k, b, -1)
        grads = input_grad((stacked * w.to(stacked.dtype)).sum(), leaf)
        return stacked[0].detach(), grads.view(k, *x.shape)


def difference_weights(first: torch.Tensor, others: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(m, n, C) float32: the weights e_k - e_p whose products with the logits are f_k - f_p, for each image's
    class p = `first` (n,) and classes k = `others` (n, m)."""
    one_hot = F.one_hot(others, num_classes) - F.one_hot(first, num_classes)[:, None]
    return one_hot.transpose(0, 1).float()


def predicts(labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The `keep` of :meth:`LogitJacobian.products_of_kept` that keeps the images whose logits still predict
    `labels` (B,)."""
    return lambda logits: logits.argmax(1) == labels


def _resolve(weights: Weights, logits: torch.Tensor) -> torch.Tensor:
    return weights(logits.detach()) if callable(weights) else weights
