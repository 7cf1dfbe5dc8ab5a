"""The epoch loop of :func:`nemesis_fast.train`: one epoch's optimizer steps and validation (:class:`Epochs`),
early stopping on the validation accuracy, and :func:`evaluate_accuracy`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._amp import amp_name, autocast
from ._checks import check_device
from ._modes import eval_mode
from ._progress import progress_bar
from ._training_checks import Data, check_values
from .data.loader import DeviceLoader, check_images_labels
from .defenses.recipes import Recipe
from .resume import Resumable, restore_state, training_state

Log = Callable[[str], None]


@dataclass
class TrainResult:
    """What :func:`train` returns. `history` holds one dict per epoch: epoch, loss (mean training loss),
    val_accuracy (None without a validation set), seconds, images (training images seen, augmentation
    included). `best_epoch` is the epoch whose weights the model holds at the end."""

    model: nn.Module
    recipe: str
    settings: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    val_accuracy: float | None = None
    seconds: float = 0.0
    steps: int = 0
    stopped_early: bool = False


def forward_autocast(
    device: torch.device, amp: bool | str | None
) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """(a context factory for the forward passes, whether fp16 gradient scaling is needed)."""
    name = amp_name(amp)
    return (lambda: autocast(device.type, name)), name == "fp16"


class NaNLogitsError(ValueError):
    """The model gave NaN logits, so no prediction: raised by :func:`evaluate_accuracy`."""


def evaluate_accuracy(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    amp: bool | str = False,
) -> float:
    """The fraction of `images` (uint8 pixels, or finite float images in [0, 1], (N, C, H, W)) that `model`
    classifies as `labels` ((N,), any integer dtype), in eval mode (restored afterwards); nan for an empty set.
    `device` defaults to the model's. ValueError naming `images` for float images outside [0, 1] or not finite (as
    :func:`train` refuses them: 0..255 floats, say); ValueError where a label is not a class of the model's logits,
    or where the model gives NaN logits (no prediction; :class:`NaNLogitsError`), checked with the one host
    synchronisation that reads the count."""
    labels = check_images_labels(images, labels)
    check_values(images, None, "images")
    return accuracy(model, images, labels, batch_size=batch_size, device=device, amp=amp)


def accuracy(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    amp: bool | str = False,
) -> float:
    """:func:`evaluate_accuracy` without its check of the images' values: for rows a training run validates on as
    they are (val_rows="last": GDA's noisy copies, unclipped where clip=None), checked once by train()."""
    if device is None and isinstance(model, nn.Module):
        device = next((p.device for p in model.parameters()), None)
    device = check_device(device)
    if len(labels) == 0:
        return float("nan")
    loader = DeviceLoader(images, labels, batch_size, shuffle=False, device=device)
    autocast, _ = forward_autocast(device, amp)
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # correct, labels out of range, NaN predictions
    with eval_mode(model), torch.no_grad(), autocast():
        for x, y in loader:
            logits = model(x)
            wrong_label = (y < 0) | (y >= logits.shape[1])
            counts += torch.stack([(logits.argmax(1) == y).sum(), wrong_label.sum(), logits.isnan().any(1).sum()])
    correct, wrong_labels, undefined = counts.tolist()
    if wrong_labels:
        raise ValueError(f"labels: {wrong_labels} are not classes of the model's {logits.shape[1]} logits")
    if undefined:
        raise NaNLogitsError(f"model gave NaN logits for {undefined} of the {len(labels)} images: no prediction")
    return correct / len(labels)


@dataclass
class Epochs:
    """One epoch of :func:`train`: its optimizer steps, then validation and the epoch's log line."""

    forward: nn.Module  # the model, or its torch.compile'd module
    optimizer: torch.optim.Optimizer
    recipe: Recipe
    loader: DeviceLoader
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler | None
    max_steps: int | None
    device: torch.device
    amp: bool | str
    val: Data | None
    progress: bool | None
    say: Log

    def spent(self, result: TrainResult) -> bool:
        """Whether the step budget `max_steps` is used up."""
        return self.max_steps is not None and result.steps >= self.max_steps

    def run(self, epoch: int, epochs: int, result: TrainResult) -> dict[str, Any]:
        """Trains one epoch (counting steps into `result`), validates, logs; appends the epoch's record to
        `result.history` and returns it."""
        started = time.perf_counter()
        name = self.recipe.name
        description = f"{name} epoch {epoch}/{epochs}"
        bar = progress_bar(self.progress, iterable=self.loader, desc=description, total=len(self.loader))
        record = {"epoch": epoch, **self._steps(bar or self.loader, result)}
        val = self.val
        has_val = val is not None and len(val[1])
        if has_val:
            try:
                record["val_accuracy"] = accuracy(self.forward, *val, device=self.device, amp=self.amp)
            except NaNLogitsError as error:
                raise NaNLogitsError(f"the model's validation logits became NaN ({error})") from error
        else:
            record["val_accuracy"] = None
            if record["images"]:  # a step ran
                self._check_weights_finite()
        record["seconds"] = time.perf_counter() - started
        result.history.append(record)
        val_text = f" val_acc {record['val_accuracy']:.4f}" if has_val else ""
        self.say(f"{name} epoch {epoch}/{epochs} loss {record['loss']:.4f}{val_text} {record['seconds']:.1f}s")
        return record

    def _check_weights_finite(self) -> None:
        """NaNLogitsError where a weight became NaN or infinite: without a validation set, whose NaN logits tell,
        the one sign that training diverged (one host synchronisation per epoch)."""
        weights = [p for group in self.optimizer.param_groups for p in group["params"]]
        if weights and not torch.stack([torch.isfinite(p).all() for p in weights]).all():
            raise NaNLogitsError("the model's weights became NaN or infinite (no validation set to check its logits)")

    def _steps(self, batches: Iterable, result: TrainResult) -> dict[str, Any]:
        """One pass over `batches`: {"loss": the mean training loss (nan when no step ran), "images": the training
        images seen, augmentation included}."""
        total_loss = torch.zeros((), device=self.device)
        steps = seen = 0
        for x, y in batches:
            with self.autocast():
                loss = self.recipe.loss(self.forward, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            total_loss += loss.detach()
            steps += 1
            seen += len(y)
            result.steps += 1
            if hasattr(batches, "set_postfix") and steps % 50 == 0:
                batches.set_postfix(loss=f"{total_loss.item() / steps:.4f}")
            if self.spent(result):
                break
        loss = total_loss.item() / steps if steps else float("nan")  # no step, no loss (not 0.0)
        return {"loss": loss, "images": seen}


@dataclass
class EarlyStopping:
    """The best validation accuracy so far, its weights, and the epochs waited since (patience None: never stop)."""

    patience: int | None
    best_accuracy: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0

    def state(self) -> tuple[float, dict[str, torch.Tensor] | None, int]:
        return self.best_accuracy, self.best_state, self.waited

    def update(self, accuracy: float | None, epoch: int, model: nn.Module, result: TrainResult) -> bool:
        """Records an epoch's validation accuracy (None: no validation, every epoch counts as best); True when
        training should stop."""
        if accuracy is None:
            result.best_epoch = epoch
        elif accuracy > self.best_accuracy:
            self.best_accuracy, result.best_epoch, self.waited = accuracy, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.waited += 1
            if self.patience is not None and self.waited >= self.patience:
                result.stopped_early = True
                return True
        return False


def epoch_state(epoch: int, runner: Epochs, result: TrainResult, stopping: EarlyStopping) -> dict[str, Any]:
    """The whole training state after `epoch` (0: before the first), for a checkpoint to keep."""
    return training_state(
        epoch,
        result.model,
        runner.optimizer,
        runner.loader,
        runner.recipe,
        result,
        *stopping.state(),
        runner.device,
        runner.scaler,
    )


def run_epochs(
    run: Resumable,
    resumed: dict[str, Any] | None,
    epochs: int,
    epoch_runner: Epochs,
    result: TrainResult,
    stopping: EarlyStopping,
) -> None:
    """The epochs after those of `resumed` (the state `run`'s checkpoint held, restored first; None: none), up to
    `epochs`, each followed by a checkpoint, until the budget is spent or early stopping; the model (`result`'s)
    ends with the weights of its best validated epoch."""
    last_epoch, model, recipe, say = 0, result.model, epoch_runner.recipe, epoch_runner.say
    if resumed is not None:
        r = epoch_runner
        stopping.best_accuracy, stopping.best_state, stopping.waited = restore_state(
            resumed, model, r.optimizer, r.loader, recipe, result, r.device, r.scaler, run.name
        )
        last_epoch = resumed["epoch"]
        say(f"{recipe.name}: resuming after epoch {last_epoch} from the checkpoint")
    for epoch in range(last_epoch + 1, epochs + 1):
        model.train()
        try:
            record = epoch_runner.run(epoch, epochs, result)
        except NaNLogitsError as error:
            raise _diverged(error, epoch, model, stopping, result, recipe, run.checkpoint is not None) from error
        if stopping.update(record["val_accuracy"], epoch, model, result):
            say(f"{recipe.name}: no better validation accuracy for {stopping.patience} epochs; stopping")
            break
        if epoch_runner.spent(result):
            break
        if run.checkpoint is not None:  # the state copies every weight to the host: only for a checkpoint
            run.save(epoch_state(epoch, epoch_runner, result, stopping))
    if stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
        result.val_accuracy = stopping.best_accuracy


def _diverged(
    error: NaNLogitsError,
    epoch: int,
    model: nn.Module,
    stopping: EarlyStopping,
    result: TrainResult,
    recipe: Recipe,
    checkpointed: bool,
) -> NaNLogitsError:
    """The error to raise where `epoch` diverged (NaN validation logits; without validation, NaN or infinite
    weights): the model is first given back the weights of its best epoch (where one validated), which the message
    names, as it names what the checkpoint (where `checkpointed`) keeps: the epoch before, not saved over."""
    if stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
        result.val_accuracy = stopping.best_accuracy
        kept = f"the model is given back the weights of epoch {result.best_epoch}, its best"
    else:
        kept = "no epoch validated before it, so the model keeps the diverged weights"
    if checkpointed and epoch > 1:
        kept += f"; the checkpoint keeps epoch {epoch - 1}"
    return NaNLogitsError(
        f"{recipe.name}: training diverged in epoch {epoch}: {error}; {kept}. Try a lower lr, or amp='bf16' "
        "rather than 'fp16'"
    )
