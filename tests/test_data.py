"""Data files: real MNIST in every layout, CIFAR-10 batches the tests write, corrupt, truncated and foreign files,
and the restricted unpickler. (The device-resident loader and the validation split: test_data_loader.py.)"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from _support import TRAIN_BATCHES, cifar_batch, mnist_root, write_cifar

from nemesis_fast.data import DataFormatError, data_files, load_cifar10, load_mnist
from nemesis_fast.data.cifar10 import cifar10_files, read_batch
from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR, read_idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ---------------------------------------------------------------- MNIST


def idx_bytes(array: np.ndarray, *, magic: bytes | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    shape = array.shape if shape is None else shape
    magic = magic if magic is not None else bytes([0, 0, 8, len(shape)])
    return magic + b"".join(int(d).to_bytes(4, "big") for d in shape) + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n: int = 12, *, gz: bool = True, seed: int = 0, **overrides: bytes) -> Path:
    """Four small IDX files in `folder`; `overrides` replaces a file's bytes (keys of MNIST_FILES)."""
    rng = np.random.default_rng(seed)
    content = {
        "train_images": idx_bytes(rng.integers(0, 256, (n, 28, 28))),
        "train_labels": idx_bytes(rng.integers(0, 10, n)),
        "test_images": idx_bytes(rng.integers(0, 256, (n // 2, 28, 28))),
        "test_labels": idx_bytes(rng.integers(0, 10, n // 2)),
        **overrides,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, data in content.items():
        name = MNIST_FILES[key]
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def test_real_mnist_train_and_test():
    root = mnist_root()
    for split, counts, first in (("train", MNIST_TRAIN_COUNTS, 5), ("test", MNIST_TEST_COUNTS, 7)):
        images, labels = load_mnist(root, split)
        n = sum(counts)
        assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8 and images.is_contiguous()
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert torch.bincount(labels, minlength=10).tolist() == counts
        assert labels[0].item() == first
        assert images.max().item() == 255 and images.min().item() == 0
        assert images[:, :, 0, 0].max().item() == 0  # the corners of MNIST digits are background


def test_real_mnist_in_torchvision_layout_and_raw(tmp_path):
    root = mnist_root()
    expected = load_mnist(root, "test")
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for key in ("test_images", "test_labels"):
        shutil.copy(root / f"{MNIST_FILES[key]}.gz", raw)
    for actual in (load_mnist(tmp_path / "tv", "test"), load_mnist(str(tmp_path / "tv"), "test")):
        assert all(torch.equal(a, e) for a, e in zip(actual, expected))
    plain = tmp_path / "plain"
    plain.mkdir()
    for key in ("test_images", "test_labels"):
        (plain / MNIST_FILES[key]).write_bytes(gzip.decompress((root / f"{MNIST_FILES[key]}.gz").read_bytes()))
    assert all(torch.equal(a, e) for a, e in zip(load_mnist(plain, "test"), expected))


def test_bundled_sample_is_balanced():
    images, labels = load_mnist(MNIST_SAMPLE_DIR, "train")
    assert images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [1000] * 10
    assert torch.bincount(load_mnist(MNIST_SAMPLE_DIR, "test")[1]).tolist() == [200] * 10


@pytest.mark.parametrize("gz", [True, False])
def test_small_files_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    pixels, digits = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    write_mnist(tmp_path, gz=gz, train_images=idx_bytes(pixels), train_labels=idx_bytes(digits))
    images, labels = load_mnist(tmp_path, "train")
    assert images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(images[:, 0].numpy(), pixels)
    np.testing.assert_array_equal(labels.numpy(), digits)


def test_empty_split_is_empty_not_an_error(tmp_path):
    write_mnist(tmp_path, train_images=idx_bytes(np.zeros((0, 28, 28))), train_labels=idx_bytes(np.zeros(0)))
    images, labels = load_mnist(tmp_path, "train")
    assert images.shape == (0, 1, 28, 28) and labels.shape == (0,)


def mnist_image(n: int = 12) -> np.ndarray:
    return np.zeros((n, 28, 28), dtype=np.uint8)


CORRUPT_MNIST = {
    # name: (file key, its bytes, the message expected)
    "truncated data": ("train_images", idx_bytes(mnist_image())[:-100], r"truncated: header promises \(12, 28, 28\)"),
    "truncated header": ("train_images", idx_bytes(mnist_image())[:9], "truncated inside its header"),
    "too short": ("train_labels", b"\x00\x00", "too short for an IDX header"),
    "trailing bytes": ("train_labels", idx_bytes(np.zeros(12)) + b"xyz", "3 unexpected bytes after"),
    "foreign magic (PNG)": ("train_images", b"\x89PNG\r\n\x1a\n" + bytes(64), "not an unsigned-byte IDX file"),
    "float IDX": ("train_images", idx_bytes(mnist_image(), magic=b"\x00\x00\x0d\x03"), "not an unsigned-byte"),
    "labels file as images": ("train_images", idx_bytes(np.zeros(12)), "has 1 dimensions, expected 3"),
    "wrong image size": ("train_images", idx_bytes(np.zeros((12, 32, 32))), r"images are \(32, 32\)"),
    "count mismatch": ("train_labels", idx_bytes(np.zeros(11)), "holds 12 images but .* holds 11 labels"),
    "label out of range": ("train_labels", idx_bytes(np.full(12, 10)), "label 10 is outside 0..9"),
    "huge header": ("train_images", idx_bytes(np.zeros(0), shape=(2**32 - 1,) * 3), "truncated: header promises"),
}


@pytest.mark.parametrize("case", list(CORRUPT_MNIST))
@pytest.mark.parametrize("gz", [True, False])
def test_corrupt_mnist_names_file_and_fault(tmp_path, case, gz):
    key, data, message = CORRUPT_MNIST[case]
    write_mnist(tmp_path, gz=gz, **{key: data})
    with pytest.raises(DataFormatError, match=message) as info:
        load_mnist(tmp_path, "train")
    assert MNIST_FILES[key] in str(info.value)


def test_broken_gzip_stream(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte.gz: cannot be read as gzip"):
        load_mnist(tmp_path, "train")
    path.write_bytes(b"not gzip at all")  # (read as the raw file it is, whatever its name says)
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz: not an unsigned-byte IDX file"):
        load_mnist(tmp_path, "train")


def test_gzip_is_told_by_its_bytes_not_by_the_files_name(tmp_path):
    """A browser that unpacks the download but keeps the .gz name, or a gzip file named without .gz: both read."""
    expected = load_mnist(write_mnist(tmp_path / "plain", gz=False), "test")
    for folder, rename in (("unpacked", lambda p: p.with_name(p.name + ".gz")), ("packed", None)):
        write_mnist(tmp_path / folder, gz=rename is None)
        for path in (tmp_path / folder).iterdir():
            path.rename(rename(path) if rename else path.with_suffix(""))
        got = load_mnist(tmp_path / folder, "test")
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_images_and_labels_come_from_one_folder(tmp_path):
    """A stray images file in root beside a full copy in MNIST/raw paired root's images with the copy's labels."""
    full = write_mnist(tmp_path / "MNIST" / "raw", seed=1)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((12, 28, 28))))  # a stray file, 12 too
    images, labels = load_mnist(tmp_path, "train")
    assert torch.equal(images, load_mnist(full, "train")[0]) and torch.equal(labels, load_mnist(full, "train")[1])
    (full / "train-images-idx3-ubyte.gz").unlink()  # the images now in root alone, the labels in MNIST/raw alone
    with pytest.raises(FileNotFoundError, match="no folder holds both MNIST train files: .* lie in two folders"):
        load_mnist(tmp_path, "train")


def test_what_cannot_be_read_is_an_os_error_naming_it(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    write_cifar(tmp_path / "cifar")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(PermissionError, match="train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path, "train")
    with pytest.raises(PermissionError, match="batches.meta"):
        load_cifar10(tmp_path / "cifar", "test")


def test_a_home_folder_and_a_file_given_for_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_mnist(tmp_path / "mnist")
    write_cifar(tmp_path / "cifar")
    assert len(load_mnist("~/mnist", "test")[1]) == 6 and len(load_cifar10("~/cifar", "test")[1]) == 7
    # the lower-level readers take ~ alike (they looked for a folder named "~")
    assert cifar10_files("~/cifar", "test") == cifar10_files(tmp_path / "cifar", "test") != []
    assert len(read_batch("~/cifar/test_batch")["labels"]) == 7
    assert read_idx("~/mnist/t10k-labels-idx1-ubyte.gz", 1).shape == (6,)
    with pytest.raises(FileNotFoundError, match="is a file; pass the folder that holds the IDX files"):
        load_mnist(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", "test")


def test_missing_files_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'"):
        load_mnist(MNIST_SAMPLE_DIR, "validation")


# ---------------------------------------------------------------- CIFAR-10


def test_data_files_names_the_files_the_loaders_read(tmp_path):
    raw = write_mnist(tmp_path / "MNIST" / "raw", gz=False)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")  # not read: its labels are not beside it
    cifar = write_cifar(tmp_path / "cifar-10-batches-py")
    assert data_files(tmp_path, "--root", ("mnist",), ("test",)) == {
        f"--root's MNIST/raw/{name}": raw / name for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    }
    assert data_files(tmp_path, "--root", ("mnist",), ("train",)) == {
        f"--root's MNIST/raw/{name}": raw / name for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    }
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")  # now the root holds both: read first
    assert set(data_files(tmp_path, "--root", ("mnist",), ("train",))) == {
        "--root's train-images-idx3-ubyte.gz",
        "--root's train-labels-idx1-ubyte",
    }
    read = [cifar / name for name in (*TRAIN_BATCHES, "test_batch", "batches.meta")]
    assert sorted(data_files(tmp_path, "--root", ("cifar10",)).values()) == sorted(read)  # batches.meta once
    assert data_files(tmp_path / "absent", "--root") == {}


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_round_trip(tmp_path, protocol):
    folder = write_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    images, labels = load_cifar10(tmp_path, "train")
    assert images.shape == (35, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (35,) and labels.dtype == torch.int64
    batches = [cifar_batch(7, i) for i in range(5)]
    np.testing.assert_array_equal(labels.numpy(), sum((b["labels"] for b in batches), []))
    rows = np.concatenate([b["data"] for b in batches])
    # each row holds the red plane, then green, then blue, each 32x32 row-major
    np.testing.assert_array_equal(images[8, 1].numpy(), rows[8, 1024:2048].reshape(32, 32))
    np.testing.assert_array_equal(images.reshape(35, -1).numpy(), rows)
    test_images, test_labels = load_cifar10(folder, "test")  # the batches folder itself works too
    assert test_images.shape == (7, 3, 32, 32)
    assert test_labels.tolist() == cifar_batch(7, 5)["labels"]


def test_cifar_python2_style_bytes_keys_and_numpy_labels(tmp_path):
    batch = cifar_batch(7, 5, bytes_keys=True)
    batch[b"labels"] = np.asarray(batch[b"labels"], dtype=np.int32)
    write_cifar(tmp_path, test_batch=batch)
    assert load_cifar10(tmp_path, "test")[1].tolist() == cifar_batch(7, 5)["labels"]


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the archive's Python 2 pickles are: protocol 2, str (not bytes) payloads and
    numpy.core.multiarray._reconstruct, written opcode by opcode."""

    def string(text: bytes) -> bytes:  # SHORT_BINSTRING or BINSTRING
        return b"U" + bytes([len(text)]) + text if len(text) < 256 else b"T" + struct.pack("<i", len(text)) + text

    def integer(n: int) -> bytes:  # BININT1 or BININT2
        return b"K" + bytes([n]) if n < 256 else b"M" + struct.pack("<H", n)

    dtype = b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R(" + integer(3) + string(b"|")
    dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff" + integer(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b") + b"\x87R"
    array += b"(" + integer(1) + integer(data.shape[0]) + integer(data.shape[1]) + b"\x86" + dtype
    array += b"\x89" + string(data.tobytes()) + b"tb"
    items = b"".join(integer(v) for v in labels)
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + b"](" + items + b"eu."


def test_cifar_python2_pickles_as_in_the_archive(tmp_path):
    write_cifar(tmp_path)
    for i, name in enumerate([*TRAIN_BATCHES, "test_batch"]):
        batch = cifar_batch(7, i)
        (tmp_path / name).write_bytes(python2_batch(batch["data"], batch["labels"]))
    images, labels = load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(images.reshape(7, -1).numpy(), cifar_batch(7, 5)["data"])
    assert labels.tolist() == cifar_batch(7, 5)["labels"]
    assert load_cifar10(tmp_path, "train")[0].shape == (35, 3, 32, 32)


def test_cifar_without_meta_expects_the_archive_counts(tmp_path):
    write_cifar(tmp_path, meta=False)
    with pytest.raises(DataFormatError, match="test_batch: holds 7 images, expected 10000 per batch"):
        load_cifar10(tmp_path, "test")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_cifar_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    batch = cifar_batch(7, 5)
    batch["filenames"] = _RunsCode(marker)
    write_cifar(tmp_path, test_batch=batch)
    with pytest.raises(DataFormatError, match=r"test_batch: .*refuses to load the global (posix|nt|os)\.mkdir"):
        load_cifar10(tmp_path, "test")
    assert not marker.exists()


def _object_array_batch() -> dict:
    batch = cifar_batch(7, 5)
    batch["data"] = batch["data"].astype(object)
    return batch


def _batch_with(**changes: object) -> dict:
    return {**cifar_batch(7, 5), **changes}


CORRUPT_CIFAR = {
    "not a dict": ([1, 2, 3], "unpickles to a list, expected a dict"),
    "no labels": ({"data": np.zeros((7, 3072), np.uint8)}, "has no 'labels' entry"),
    "CIFAR-100": ({"data": np.zeros((7, 3072), np.uint8), "fine_labels": [0] * 7}, "looks like CIFAR-100"),
    "no data": ({"labels": [0] * 7}, "has no 'data' entry"),
    "float data": (_batch_with(data=np.zeros((7, 3072), np.float32)), r"got a float32 array of shape \(7, 3072\)"),
    "object data": (_object_array_batch(), "data must be a uint8 array"),
    "wrong row size": (_batch_with(data=np.zeros((7, 1024), np.uint8)), r"shape \(N, 3072\), got a uint8 array"),
    "data not an array": (_batch_with(data=b"\x00" * 7 * 3072), "got a bytes"),
    "labels count": (_batch_with(labels=[0] * 6), "holds 7 images but 6 labels"),
    "labels type": (_batch_with(labels=["cat"] * 7), "labels must be a list of ints"),
    "label range": (_batch_with(labels=[0] * 6 + [10]), "label 10 is outside 0..9"),
    "negative label": (_batch_with(labels=[0] * 6 + [-1]), "label -1 is outside 0..9"),
    "batch size": (cifar_batch(6, 5), "holds 6 images, expected 7 per batch"),
}


@pytest.mark.parametrize("case", list(CORRUPT_CIFAR))
def test_corrupt_cifar_names_file_and_fault(tmp_path, case):
    obj, message = CORRUPT_CIFAR[case]
    write_cifar(tmp_path, test_batch=obj)
    with pytest.raises(DataFormatError, match=message) as info:
        load_cifar10(tmp_path, "test")
    assert str(tmp_path / "test_batch") in str(info.value)


def test_bytes_after_a_cifar_pickle_are_refused(tmp_path):
    """MNIST's reader refuses bytes after the data; the pickle's reader stopped at the pickle's end."""
    write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes() + pickle.dumps(cifar_batch(7, 9)))
    with pytest.raises(DataFormatError, match=r"test_batch: \d+ unexpected bytes after the pickle"):
        load_cifar10(tmp_path, "test")


def test_a_cifar_pickle_cannot_hand_back_memory_it_did_not_write(tmp_path):
    """numpy.ndarray(shape, dtype) called by a pickle, or _reconstruct of a non-empty shape, gives an array of
    uninitialised memory: only numpy's own way (an empty array, then its state) builds arrays."""
    uninitialised = (
        b"\x80\x02}(C\x04datacnumpy\nndarray\nK\x02M\x00\x0c\x86cnumpy\ndtype\nX\x02\x00\x00\x00u1\x89\x88\x87R"
        b"\x86RC\x06labels](K\x00K\x01eu."
    )
    reconstruct = pickle.dumps(cifar_batch(2, 0), protocol=2).replace(b"K\x00\x85", b"K\x02\x85", 1)
    write_cifar(tmp_path, n=2)
    for data, match in ((uninitialised, "not callable"), (reconstruct, "refuses an array not built as numpy")):
        (tmp_path / "test_batch").write_bytes(data)
        with pytest.raises(DataFormatError, match=f"test_batch: not a CIFAR-10 batch pickle: .*{match}"):
            load_cifar10(tmp_path, "test")


@pytest.mark.parametrize("cut", [1, 100, 3000])
def test_truncated_cifar_pickle(tmp_path, cut):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DataFormatError, match="data_batch_3: not a CIFAR-10 batch pickle"):
        load_cifar10(tmp_path, "train")


def test_foreign_file_as_cifar_batch(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(gzip.compress(idx_bytes(np.zeros((7, 28, 28)))))
    with pytest.raises(DataFormatError, match="test_batch: not a CIFAR-10 batch pickle"):
        load_cifar10(tmp_path, "test")


def test_bad_cifar_meta(tmp_path):
    write_cifar(tmp_path, **{"batches.meta": {"num_cases_per_batch": 7, "num_vis": 1024}})
    with pytest.raises(DataFormatError, match="batches.meta: num_vis is 1024"):
        load_cifar10(tmp_path, "test")
    write_cifar(tmp_path, **{"batches.meta": {"num_cases_per_batch": "7"}})
    with pytest.raises(DataFormatError, match="num_cases_per_batch must be a positive int"):
        load_cifar10(tmp_path, "test")
    write_cifar(tmp_path, **{"batches.meta": {"label_names": ["a"]}})
    with pytest.raises(DataFormatError, match="label_names must list 10 classes"):
        load_cifar10(tmp_path, "test")


def test_cifar_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 batches found"):
        load_cifar10(tmp_path)
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4 is missing"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_cifar10(tmp_path, "val")


def test_a_folder_of_the_other_data_set_says_so(tmp_path):
    """CIFAR-10 given as MNIST (or the reverse) was told only that MNIST's files were missing."""
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    with pytest.raises(FileNotFoundError, match="no MNIST train images .* It holds CIFAR-10's batches: choose the"):
        load_mnist(tmp_path / "cifar", "train")
    write_mnist(tmp_path / "mnist")
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 batches .* It holds MNIST's IDX files: choose the"):
        load_cifar10(tmp_path / "mnist", "train")
