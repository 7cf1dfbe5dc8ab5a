"""Training resumed from its state after every epoch: to the weights of an uninterrupted run, and the states of
another run or another kind of device refused."""

from __future__ import annotations

import pytest
import torch
from _training_cases import Crash, CrashingCheckpoint, quiet, small, tiny_model, tiny_set
from torch import nn

import nemesis_fast as nf
from nemesis_fast.checkpoints import load_checkpoint, save_checkpoint
from nemesis_fast.evaluation.cache import CachedCheckpoint, ResultCache
from nemesis_fast.models import mnist_cnn
from nemesis_fast.nn import replace_relu
from nemesis_fast.resume import weights_fingerprint
from nemesis_fast.training import train


@pytest.mark.parametrize(
    "recipe,settings,val_rows",
    [
        ("standard", None, "images"),
        ("gda", {"copies": 2}, "images"),
        ("vat", {"mode": "online"}, "images"),
        ("gda", {"copies": 2, "fixed_set": True}, "images"),
        ("gda", {"copies": 2, "fixed_set": True}, "last"),
    ],
)
def test_an_interrupted_training_run_resumes_to_the_same_weights(recipe, settings, val_rows, tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 1, 6, 6), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (96,), generator=g)

    def fresh() -> nn.Module:
        torch.manual_seed(4)  # with dropout, so that torch's own stream matters too
        return nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10))

    kwargs = dict(settings=settings, epochs=3, batch_size=16, patience=None, seed=3, val_rows=val_rows, log=False)
    straight = fresh()
    nf.train(straight, (images, labels), recipe, **kwargs)
    checkpoint = CrashingCheckpoint(after=1)
    interrupted = fresh()
    with pytest.raises(Crash):
        nf.train(interrupted, (images, labels), recipe, checkpoint=checkpoint, **kwargs)
    checkpoint.after = None
    resumed = fresh()
    result = nf.train(resumed, (images, labels), recipe, checkpoint=checkpoint, **kwargs)
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and checkpoint.state["epoch"] == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    path = tmp_path / "state.pt"  # the file form, and a state of another run refused
    nf.train(fresh(), (images, labels), recipe, checkpoint=path, **{**kwargs, "epochs": 1})
    with pytest.raises(ValueError, match="checkpoint: its state belongs to another training run"):
        nf.train(fresh(), (images, labels), recipe, checkpoint=path, **{**kwargs, "seed": 4})
    for other in ((255 - images, labels), (images, (labels + 1) % 10)):  # other data of the same size
        with pytest.raises(ValueError, match="checkpoint: its state belongs to another training run"):
            nf.train(fresh(), other, recipe, checkpoint=path, **{**kwargs, "epochs": 1})
    with pytest.raises(ValueError, match="checkpoint: its state belongs to another training run \\(architecture\\."):
        wider = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 10))
        nf.train(wider, (images, labels), recipe, checkpoint=path, **{**kwargs, "epochs": 1})


def test_a_state_of_another_architecture_amp_or_compile_is_refused(mnist_sample):
    from nemesis_fast.nn import BoundedReLU

    data, kwargs = small(mnist_sample, 40), quiet(epochs=2, batch_size=20, patience=None)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(mnist_cnn(), data, checkpoint=checkpoint, **kwargs)
    for model, other, differs in (
        (mnist_cnn(activation="brelu", t=0.5), {}, "architecture.brelu_t"),
        (replace_relu(mnist_cnn(), 0.5), {}, "architecture.brelu_t"),  # changed after it was built
        (mnist_cnn(), {"amp": "bf16"}, "amp"),
        (mnist_cnn(), {"compile": True}, "compile"),
    ):
        with pytest.raises(ValueError, match=f"checkpoint: its state belongs to another training run \\({differs}"):
            train(model, data, checkpoint=checkpoint, **kwargs, **other)
    for key in ("architecture", "amp", "compile"):  # a state written before these were recorded
        checkpoint.state["signature"].pop(key)
    checkpoint.after = None
    resumed = train(mnist_cnn(), data, checkpoint=checkpoint, **kwargs, amp="bf16")
    assert [r["epoch"] for r in resumed.history] == [1, 2]

    def unrecorded(t: float) -> nn.Module:  # a model of no builder: its shapes and BReLU thresholds tell
        return nn.Sequential(nn.Flatten(), nn.Linear(36, 10), BoundedReLU(t))

    checkpoint = CrashingCheckpoint(after=None)
    train(unrecorded(1.0), tiny_set(), checkpoint=checkpoint, **{**kwargs, "epochs": 1})
    message = "checkpoint: its state belongs to another training run \\(architecture.brelu_t.2 1.0 there, 0.5 here\\)"
    with pytest.raises(ValueError, match=message):
        train(unrecorded(0.5), tiny_set(), checkpoint=checkpoint, **{**kwargs, "epochs": 1})


def test_a_checkpoint_path_that_cannot_serve_is_refused_before_any_epoch(tmp_path):
    data = (torch.randint(0, 256, (32, 1, 6, 6), dtype=torch.uint8), torch.randint(0, 10, (32,)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    user_model = tmp_path / "model.pt"
    save_checkpoint(user_model, model, recipe="standard")
    kept = user_model.read_bytes()
    cases = [
        (tmp_path, "checkpoint: .* is a folder"),
        (garbage / "state.pt", "checkpoint: .*garbage.pt"),
        (garbage, "checkpoint: .*garbage.pt' is not a training checkpoint"),
        (user_model, "checkpoint: .*model.pt' is not a training checkpoint of nemesis_fast.train"),
    ]
    for path, match in cases:
        before = [p.detach().clone() for p in model.parameters()]
        with pytest.raises(ValueError, match=match):
            nf.train(model, data, epochs=1, log=False, checkpoint=path)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert user_model.read_bytes() == kept


class _Times300(nn.Module):
    """Scales the pixels up, so that fp16's gradients overflow at the first loss scale and the GradScaler backs off."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 300.0


def _fp16_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), _Times300(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.mark.filterwarnings("ignore:amp='fp16' on this CPU")
def test_an_fp16_run_resumes_with_its_gradient_scale():
    """The GradScaler's scale was not saved: a resumed fp16 run started again at 65536 and trained otherwise."""
    data, kwargs = tiny_set(96), quiet(epochs=3, batch_size=16, amp="fp16", patience=None, val_fraction=0.0)
    straight = _fp16_model()
    train(straight, data, **kwargs)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(_fp16_model(), data, checkpoint=checkpoint, **kwargs)
    assert checkpoint.state["scaler"]["scale"] < 65536.0, "the scale backed off in epoch 1"
    older = {k: v for k, v in checkpoint.state.items() if k != "scaler"}  # a state written before it was saved
    checkpoint.after = None
    resumed = _fp16_model()
    train(resumed, data, checkpoint=checkpoint, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    checkpoint.state = older
    assert [r["epoch"] for r in train(_fp16_model(), data, checkpoint=checkpoint, **kwargs).history] == [1, 2, 3]


def test_a_state_of_another_validation_set_or_source_model_is_refused():
    images, labels = tiny_set(60)
    data, val = (images[:40], labels[:40]), (images[40:], labels[40:])
    kwargs = quiet(epochs=2, batch_size=8, patience=None)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(tiny_model(), data, val_data=val, checkpoint=checkpoint, **kwargs)
    other_val = (val[0], (val[1] + 1) % 10)
    with pytest.raises(ValueError, match=r"checkpoint: its state belongs to another training run \(val_data "):
        train(tiny_model(), data, val_data=other_val, checkpoint=checkpoint, **kwargs)
    checkpoint.state["signature"].pop("val_data")  # a state written before val_data was recorded resumes
    checkpoint.after = None
    assert [r["epoch"] for r in train(tiny_model(), data, val_data=val, checkpoint=checkpoint, **kwargs).history] == [
        1,
        2,
    ]
    offline = dict(source_model=tiny_model(), val_fraction=0.0, **kwargs)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(tiny_model(), data, "fgsm_adversarial", checkpoint=checkpoint, **offline)
    with torch.no_grad():
        offline["source_model"][1].weight.add_(0.1)
    with pytest.raises(ValueError, match=r"checkpoint: its state belongs to another training run \(source_model "):
        train(tiny_model(), data, "fgsm_adversarial", checkpoint=checkpoint, **offline)
    norm = nn.BatchNorm1d(3)  # a 0-dimensional buffer (num_batches_tracked) too
    before = weights_fingerprint(norm)
    norm(torch.rand(4, 3))  # in training mode: the running statistics and num_batches_tracked move
    assert weights_fingerprint(norm) != before


def test_an_offline_run_that_trained_its_source_resumes_with_that_source():
    """A resumed offline run with no source_model trained another source (hours, and on a GPU other weights), so
    its examples, and the model, differed from an uninterrupted run's. The trained source is now kept."""
    offline = dict(settings={"mode": "offline", "eps": 0.3}, **quiet(epochs=3, batch_size=8, patience=None))
    whole = tiny_model()
    train(whole, tiny_set(), "fgsm_adversarial", **offline)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(tiny_model(), tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **offline)
    checkpoint.after, lines, resumed = None, [], tiny_model()
    train(resumed, tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **{**offline, "log": lines.append})
    assert lines[0] == "fgsm_adversarial (offline): training set doubled to 72 images", lines
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(ValueError, match=r"another training run \(source_model 'trained first' there, '[0-9a-f]+"):
        train(tiny_model(), tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, source_model=whole, **offline)
    checkpoint = CrashingCheckpoint(after=0)  # interrupted in epoch 1: the source is kept already
    with pytest.raises(Crash):
        train(tiny_model(), tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **offline)
    checkpoint.after, lines, resumed = None, [], tiny_model()
    train(resumed, tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **{**offline, "log": lines.append})
    assert not any("source model first" in line for line in lines), lines
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_another_runs_state_is_refused_before_an_offline_run_trains_its_source():
    """An offline run given a standard run's state trained its whole source first, and only then refused it; given
    an offline state of another network, it failed in load_state_dict with a traceback."""
    kwargs = quiet(epochs=2, batch_size=8, patience=None, val_fraction=0.0)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(tiny_model(), tiny_set(), checkpoint=checkpoint, **kwargs)
    checkpoint.after, lines = None, []
    offline = {**kwargs, "settings": {"mode": "offline"}, "log": lines.append}
    with pytest.raises(ValueError, match=r"checkpoint: its state belongs to another training run \(.*recipe"):
        train(tiny_model(), tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **offline)
    assert lines == []  # refused before any work
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(tiny_model(), tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **{**offline, "log": False})
    checkpoint.after = None
    wider = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match=r"another training run \(architecture.shapes"):
        train(wider, tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **offline)
    checkpoint.state["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)  # as a run on a CUDA device writes it
    with pytest.raises(ValueError, match="checkpoint: its state was written by a run on a CUDA device"):
        train(tiny_model(), tiny_set(), "fgsm_adversarial", checkpoint=checkpoint, **offline)
    assert lines == []


def test_a_state_written_on_another_kind_of_device_is_refused(tmp_path):
    """A CPU run's state resumed on a GPU gave the GPU's shuffling generator the CPU's state (and the reverse)."""
    kwargs = quiet(epochs=2, batch_size=8, patience=None, val_fraction=0.0)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        train(tiny_model(), tiny_set(), checkpoint=checkpoint, **kwargs)
    checkpoint.state["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)  # as a run on a CUDA device writes it
    checkpoint.after = None
    with pytest.raises(ValueError, match="checkpoint: its state was written by a run on a CUDA device; this one is on"):
        train(tiny_model(), tiny_set(), checkpoint=checkpoint, **kwargs)
    path = save_checkpoint(tmp_path / "m.pt", mnist_cnn(), recipe="standard")
    rebuilt, _ = load_checkpoint(path, map_location="meta")  # rebuilt on map_location's device, not the CPU
    assert all(p.is_meta for p in rebuilt.parameters())
    cached = CachedCheckpoint(ResultCache(tmp_path / "cache"), {"model": "standard"})
    cached.save(checkpoint.state)  # in the evaluation, the error names the cache file to remove
    with pytest.raises(ValueError, match=rf"training state '{tmp_path}/cache/training/[0-9a-f]+\.pt': its state was"):
        train(tiny_model(), tiny_set(), checkpoint=cached, **kwargs)


@pytest.mark.cuda
def test_a_checkpoint_loads_onto_the_gpu_and_a_cpu_state_does_not_resume_there(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", mnist_cnn(), recipe="standard")
    rebuilt, _ = load_checkpoint(path, map_location="cuda")
    assert all(p.is_cuda for p in rebuilt.parameters())
    checkpoint = CrashingCheckpoint(after=1)
    kwargs = dict(epochs=2, batch_size=8, patience=None, val_fraction=0.0, log=False)
    with pytest.raises(Crash):
        train(tiny_model(), tiny_set(), device="cpu", checkpoint=checkpoint, **kwargs)
    checkpoint.after = None
    with pytest.raises(ValueError, match="checkpoint: its state was written by a run on the CPU; this one is on cuda"):
        train(tiny_model(), tiny_set(), device="cuda", checkpoint=checkpoint, **kwargs)


def test_a_state_of_a_builtin_recipe_is_refused_to_a_recipe_class_of_ones_own_of_the_same_name(tmp_path):
    """A subclass of a built-in recipe that keeps its name trains otherwise: the built-in's state is not its own."""
    from nemesis_fast.defenses.recipes import StandardRecipe

    class Halved(StandardRecipe):
        def loss(self, model, x, y):
            return super().loss(model, x, y) / 2

    g = torch.Generator().manual_seed(0)
    data = (torch.randint(0, 256, (48, 1, 6, 6), dtype=torch.uint8, generator=g), torch.randint(0, 10, (48,)))
    kwargs = dict(epochs=1, batch_size=16, patience=None, log=False, checkpoint=tmp_path / "state.pt")
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10))
    nf.train(model, data, "standard", **kwargs)
    with pytest.raises(ValueError, match="checkpoint: its state belongs to another training run"):
        nf.train(model, data, Halved(StandardRecipe.Settings()), **kwargs)
    nf.train(model, data, StandardRecipe(StandardRecipe.Settings()), **kwargs)  # the same run


def test_a_run_resumes_with_its_labels_given_in_another_integer_dtype():
    """The labels are read as int64 before the run is signed: interrupted with int64 labels, it resumes with the
    same labels as int32 (numpy's on some platforms) to the weights of an uninterrupted run (all of them trained
    on: val_fraction=0, so that no split reads them first)."""
    images, labels = tiny_set()
    kwargs = quiet(epochs=2, batch_size=8, val_fraction=0.0, patience=None, seed=3)
    straight = tiny_model()
    nf.train(straight, (images, labels), **kwargs)
    checkpoint = CrashingCheckpoint(after=1)
    with pytest.raises(Crash):
        nf.train(tiny_model(), (images, labels), checkpoint=checkpoint, **kwargs)
    checkpoint.after = None
    resumed = tiny_model()
    result = nf.train(resumed, (images, labels.int()), checkpoint=checkpoint, **kwargs)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
