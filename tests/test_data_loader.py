"""The device-resident loader (DeviceLoader): every image once per epoch as floats, order, drop_last, augment,
float input, bad arguments, data kept on the GPU; and the validation split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nemesis_fast.data import DeviceLoader, split_validation, to_float


def small_set(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8), torch.arange(n)


def test_device_loader_covers_each_image_once_per_epoch_as_floats():
    images, labels = small_set()
    loader = DeviceLoader(images, labels, batch_size=16, seed=3, device="cpu")
    assert len(loader) == 4 and loader.num_samples == 50
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert [len(y) for _, y in batches] == [16, 16, 16, 2]
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
        assert sorted(y.tolist()) == list(range(50))
        torch.testing.assert_close(x, images[y].float() / 255, rtol=0, atol=0)
        epochs.append(y)
    assert not torch.equal(epochs[0], epochs[1]), "each epoch must draw a new permutation"
    again = DeviceLoader(images, labels, batch_size=16, seed=3, device="cpu")
    assert torch.equal(torch.cat([y for _, y in again]), epochs[0]), "the same seed gives the same batches"


def test_device_loader_without_a_seed_follows_torch_manual_seed():
    """seed=None took a seed from the operating system: torch.manual_seed did not make the batches reproducible."""
    images, labels = small_set()
    orders = []
    for _ in range(2):
        torch.manual_seed(7)
        orders.append(torch.cat([y for _, y in DeviceLoader(images, labels, batch_size=16, device="cpu")]))
    assert torch.equal(orders[0], orders[1])
    other = torch.cat([y for _, y in DeviceLoader(images, labels, batch_size=16, device="cpu")])
    assert not torch.equal(other, orders[0]), "the next loader draws another seed"


def test_device_loader_order_drop_last_augment_and_float_input():
    images, labels = small_set()
    loader = DeviceLoader(images, labels, batch_size=16, shuffle=False, drop_last=True, device="cpu")
    assert len(loader) == 3
    assert torch.equal(torch.cat([y for _, y in loader]), labels[:48])

    def twice(x, y):
        return torch.cat([x, 1 - x]), torch.cat([y, y])

    augmented = DeviceLoader(images, labels, batch_size=16, augment=twice, seed=0, device="cpu", dtype=torch.float64)
    x, y = next(iter(augmented))
    assert x.shape == (32, 1, 4, 4) and x.dtype == torch.float64 and torch.equal(y[:16], y[16:])
    floats = to_float(images)
    x, y = next(iter(DeviceLoader(floats, labels, batch_size=8, shuffle=False, device="cpu")))
    assert torch.equal(x, floats[:8])
    empty = DeviceLoader(images[:0], labels[:0], device="cpu")
    assert len(empty) == 0 and list(empty) == []


class _RowNumber:
    """An expansion that writes each row's copy index into it: row c of sample b is x_b + c."""

    size = 3

    def __call__(self, x, copy, sample):
        return x + copy.view(-1, 1, 1, 1).to(x.dtype)


def test_device_loader_batches_the_first_rows_of_an_expanded_set_copy_by_copy():
    images, labels = small_set(10)
    floats = to_float(images)
    loader = DeviceLoader(floats, labels, batch_size=4, seed=0, expand=_RowNumber(), rows=24, device="cpu")
    assert loader.num_samples == 24 and len(loader) == 6
    x, y = (torch.cat(part) for part in zip(*loader))
    copies = (x - floats[y]).flatten(1)[:, 0].round().long()
    # rows 0-23 of 30: the originals, copy 1 of all ten, copy 2 of samples 0-3 (Keras' last 6 rows left out)
    assert sorted((copies * 10 + y).tolist()) == list(range(24))
    assert DeviceLoader(floats, labels, expand=_RowNumber(), device="cpu").num_samples == 30
    with pytest.raises(ValueError, match="rows must be <= 30"):
        DeviceLoader(floats, labels, expand=_RowNumber(), rows=31)
    with pytest.raises(ValueError, match="rows must be >= 1"):
        DeviceLoader(floats, labels, rows=0)


def test_device_loader_bad_arguments():
    images, labels = small_set()
    with pytest.raises(ValueError, match="same length"):
        DeviceLoader(images, labels[:-1])
    with pytest.raises(TypeError, match="labels must have dtype int8, int16, int32, int64, uint8; got float32"):
        DeviceLoader(images, labels.float())
    # other integer labels are read as int64 (numpy's int32 on some platforms, labels kept as uint8)
    for dtype in (torch.int32, torch.uint8):
        batches = list(DeviceLoader(images, labels.to(dtype), 4, shuffle=False, device="cpu"))
        assert all(y.dtype == torch.int64 for _, y in batches)
        assert torch.equal(torch.cat([y for _, y in batches]), labels)
    with pytest.raises(TypeError, match="images must have dtype"):
        DeviceLoader(images.int(), labels)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DeviceLoader(images, labels, batch_size=0)
    with pytest.raises(TypeError, match="augment must be callable"):
        DeviceLoader(images, labels, augment=0.3)
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        DeviceLoader(images, labels, dtype=torch.uint8)
    with pytest.raises(ValueError, match="device must name a device such as 'cpu' or 'cuda:0', got 'gpu'"):
        DeviceLoader(images, labels, device="gpu")
    with pytest.raises(ValueError, match="device is 'cuda:99', but (no CUDA GPU is|only .* GPU.* are) visible"):
        DeviceLoader(images, labels, device="cuda:99")
    with pytest.raises(ValueError, match="seed must be <= 18446744073709551615"):
        DeviceLoader(images, labels, seed=2**70)
    with pytest.raises(ValueError, match="seed must be <= 18446744073709551615"):
        split_validation(images, labels, seed=2**64)
    with pytest.raises(TypeError, match="augment must return a pair"):
        next(iter(DeviceLoader(images, labels, augment=lambda x, y: x, device="cpu")))
    with pytest.raises(
        ValueError, match=r"augment must return x and y of one length, got shapes \(24, 1, 4, 4\) and \(16,\)"
    ):
        next(iter(DeviceLoader(images, labels, 16, augment=lambda x, y: (torch.cat([x, x[:8]]), y), device="cpu")))
    for name in ("shuffle", "drop_last"):  # shuffle="False" shuffled
        with pytest.raises(TypeError, match=f"{name} must be a bool, got str"):
            DeviceLoader(images, labels, **{name: "False"})
    with pytest.raises(ValueError, match="device must be one that holds data .*, got meta"):
        DeviceLoader(images, labels, device="meta")
    for bad in (images.to(torch.int8), images.bool()):
        with pytest.raises(TypeError, match="images must have dtype"):
            to_float(bad)
    with pytest.raises(TypeError, match="dtype must be a float dtype"):
        to_float(images, torch.uint8)


@pytest.mark.cuda
def test_device_loader_keeps_data_on_the_gpu():
    images, labels = small_set()
    loader = DeviceLoader(images, labels, batch_size=16, seed=1, device="cuda")
    assert loader.images.is_cuda and loader.images.dtype == torch.uint8
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda
    torch.testing.assert_close(x.cpu(), images[y.cpu()].float() / 255, rtol=0, atol=0)


def test_split_validation():
    images, labels = small_set()
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, 0.2, seed=1)
    assert len(val_y) == 10 and len(train_y) == 40
    assert sorted(torch.cat([train_y, val_y]).tolist()) == list(range(50))
    assert torch.equal(val_x, images[val_y]) and torch.equal(train_x, images[train_y])
    assert torch.equal(split_validation(images, labels, 0.2, seed=1)[1][1], val_y)
    assert not torch.equal(split_validation(images, labels, 0.2, seed=2)[1][1], val_y)
    assert len(split_validation(images, labels, 0.0)[1][1]) == 0
    with pytest.raises(ValueError, match="fraction must be < 1.0"):
        split_validation(images, labels, 1.0)
    assert torch.equal(split_validation(images, labels, 0.2, seed=np.int64(1))[1][1], val_y)  # numpy seeds too
    loaders = [DeviceLoader(images, labels, 16, seed=seed, device="cpu") for seed in (np.int64(3), 3)]
    assert torch.equal(next(iter(loaders[0]))[1], next(iter(loaders[1]))[1])


def test_split_validation_gives_int64_labels_for_labels_of_any_integer_dtype():
    images, labels = small_set()
    expected = split_validation(images, labels, 0.2, seed=1)
    for dtype in (torch.int32, torch.uint8):
        split = split_validation(images, labels.to(dtype), 0.2, seed=1)
        for (_, y), (_, reference) in zip(split, expected):
            assert y.dtype == torch.int64 and torch.equal(y, reference)


def test_labels_of_another_shape_than_n_are_refused_naming_them():
    images, labels = small_set()
    with pytest.raises(ValueError, match=r"labels must have 1 dimensions, got shape \(50, 1\)"):
        DeviceLoader(images, labels[:, None])
    with pytest.raises(ValueError, match=r"labels must have 1 dimensions, got shape \(50, 1\)"):
        split_validation(images, labels[:, None])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_uint8_pixels_become_x_over_255_correctly_rounded_on_every_device(device):
    # torch on CUDA divides by a Python number as a multiply by its reciprocal, one ulp off for about half the bytes.
    pixels = torch.arange(256, dtype=torch.uint8, device=device)
    for dtype in (torch.float32, torch.float64):
        exact = (torch.arange(256, dtype=torch.float64) / 255).to(dtype)
        assert torch.equal(to_float(pixels, dtype).cpu(), exact), dtype
