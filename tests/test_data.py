"""IDX reader, MNIST/digits loaders and deterministic batching."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from tracegrad.data import (
    BatchStream,
    DataError,
    Dataset,
    iterate_batches,
    load_dataset,
    load_digits_dataset,
    load_idx,
    load_mnist,
)

IDX_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    """Encode ``arr`` as IDX by the spec: 0, 0, dtype code, ndim, big-endian dims, payload."""
    code = IDX_CODES[arr.dtype.type] if code is None else code
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


# --- IDX reader ------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", list(IDX_CODES), ids=lambda t: t.__name__)
def test_idx_roundtrip(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        arr = rng.normal(size=(3, 4, 5)).astype(dtype)
    out = load_idx(write(tmp_path / "a.idx", idx_bytes(arr), gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 0  # writable, owns its memory


def test_idx_known_bytes(tmp_path):
    # A hand-written 1-D uint8 file and a 2x1 float32 file: 1.0 is 3f800000, -2.0 is c0000000.
    labels = bytes.fromhex("00000801 00000003 07 00 ff".replace(" ", ""))
    np.testing.assert_array_equal(load_idx(write(tmp_path / "l", labels)), [7, 0, 255])
    floats = bytes.fromhex("00000d02 00000002 00000001 3f800000 c0000000".replace(" ", ""))
    out = load_idx(write(tmp_path / "f", floats, gz=True))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0], [-2.0]])


def test_idx_truncated_payload(tmp_path):
    data = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = write(tmp_path / "t.idx", data[:-5])
    with pytest.raises(
        DataError,
        match=r"t\.idx: truncated payload: shape \(2, 3, 4\) of uint8 "
        r"needs 24 bytes, file has 19",
    ):
        load_idx(path)


def test_idx_truncated_header(tmp_path):
    data = idx_bytes(np.zeros((2, 3, 4), dtype=np.uint8))
    with pytest.raises(
        DataError, match=r"h\.idx: truncated header: 3 dims need 16 bytes, file has 9"
    ):
        load_idx(write(tmp_path / "h.idx", data[:9]))
    with pytest.raises(DataError, match=r"e\.idx: truncated header: 2 bytes"):
        load_idx(write(tmp_path / "e.idx", b"\x00\x00"))


def test_idx_truncated_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    path = write(tmp_path / "z.idx.gz", blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"z\.idx\.gz: corrupt or truncated gzip stream"):
        load_idx(path)


@pytest.mark.parametrize(
    "head, shown",
    [
        (b"\x12\x34\x08\x01", "0x12340801"),  # nonzero leading bytes
        (b"\x00\x00\x0a\x01", "0x00000A01"),  # unknown dtype code
        (b"\x00\x00\x08\x00", "0x00000800"),  # zero dims
    ],
)
def test_idx_bad_magic(tmp_path, head, shown):
    path = write(tmp_path / "m.idx", head + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match=rf"m\.idx: bad magic number {shown}; an IDX file starts"):
        load_idx(path)


def test_idx_expected_magic(tmp_path):
    # A labels file offered where images are expected is refused by name, not by shape.
    path = write(tmp_path / "labels", idx_bytes(np.arange(3, dtype=np.uint8)))
    with pytest.raises(
        DataError, match=r"labels: bad magic number 0x00000801, expected 0x00000803"
    ):
        load_idx(path, expect_magic=0x00000803)
    np.testing.assert_array_equal(load_idx(path, expect_magic=0x00000801), [0, 1, 2])


def test_idx_extra_bytes_and_wrong_dims(tmp_path):
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    with pytest.raises(
        DataError,
        match=r"x\.idx: wrong size: shape \(2, 3\) of int16 needs 12 "
        r"payload bytes, file has 13 \(1 extra\)",
    ):
        load_idx(write(tmp_path / "x.idx", idx_bytes(arr) + b"\x00"))
    # Dims claiming 2x2 over a 2x3 payload: 4 bytes too many.
    lying = bytes([0, 0, 0x0B, 2]) + (2).to_bytes(4, "big") * 2 + arr.astype(">i2").tobytes()
    with pytest.raises(DataError, match=r"d\.idx: wrong size: .* \(4 extra\)"):
        load_idx(write(tmp_path / "d.idx", lying))


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.idx: no such file"):
        load_idx(tmp_path / "nope.idx")


# --- MNIST loader on synthetic files ---------------------------------------------------------


def write_fake_mnist(root: Path, n_train=12, n_test=5, train_labels=None, gz_train=True):
    rng = np.random.default_rng(3)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 4)).astype(np.uint8),
        "train-labels-idx1-ubyte": (
            np.arange(n_train, dtype=np.uint8) % 10 if train_labels is None else train_labels
        ),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 4)).astype(np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    root.mkdir(exist_ok=True)
    for name, arr in files.items():
        gz = gz_train and name.startswith("train")  # mix gzipped and raw files
        write(root / (name + (".gz" if gz else "")), idx_bytes(arr), gz)
    return files


def test_load_mnist_synthetic(tmp_path):
    files = write_fake_mnist(tmp_path / "m")
    ds = load_mnist(tmp_path / "m")
    assert isinstance(ds, Dataset) and ds.name == "mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (12, 16) and ds.x_test.shape == (5, 16)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.image_shape == (1, 4, 4) and ds.num_features == 16
    # Pixels scaled to [0, 1] and standardized with the train split's scalar mean/std.
    train01 = files["train-images-idx3-ubyte"].astype(np.float64) / 255
    mean, std = train01.mean(), train01.std()
    assert ds.mean == pytest.approx(mean) and ds.std == pytest.approx(std)
    np.testing.assert_allclose(ds.x_train, ((train01 - mean) / std).reshape(12, 16), atol=1e-5)
    test01 = files["t10k-images-idx3-ubyte"].astype(np.float64) / 255
    np.testing.assert_allclose(ds.x_test, ((test01 - mean) / std).reshape(5, 16), atol=1e-5)
    np.testing.assert_array_equal(ds.y_train, np.arange(12) % 10)
    np.testing.assert_array_equal(ds.y_test, np.arange(5))

    nchw = load_mnist(tmp_path / "m", flatten=False)
    assert nchw.x_train.shape == (12, 1, 4, 4) and nchw.x_test.shape == (5, 1, 4, 4)
    np.testing.assert_array_equal(nchw.x_train.reshape(12, 16), ds.x_train)


def test_load_mnist_count_mismatch(tmp_path):
    write_fake_mnist(tmp_path, train_labels=np.zeros(11, dtype=np.uint8))
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte\.gz: 12 images but "
        r"train-labels-idx1-ubyte\.gz has 11 labels",
    ):
        load_mnist(tmp_path)


def test_load_mnist_label_range(tmp_path):
    write_fake_mnist(tmp_path, train_labels=np.full(12, 10, dtype=np.uint8))
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte\.gz: label 10 out of range 0\.\.9"
    ):
        load_mnist(tmp_path)


def test_load_mnist_missing_files(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path)
    msg = str(exc.value)
    assert "missing MNIST file(s) t10k-labels-idx1-ubyte;" in msg
    for name in (
        "train-images-idx3-ubyte[.gz]",
        "train-labels-idx1-ubyte[.gz]",
        "t10k-images-idx3-ubyte[.gz]",
        "t10k-labels-idx1-ubyte[.gz]",
    ):
        assert name in msg
    assert "\n" not in msg
    with pytest.raises(
        DataError,
        match=r"nowhere: MNIST directory not found; it should contain "
        r"train-images-idx3-ubyte\[\.gz\]",
    ):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist_images_file_swapped_for_labels(tmp_path):
    write_fake_mnist(tmp_path, gz_train=False)
    labels = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(labels)
    with pytest.raises(
        DataError,
        match=r"t10k-images-idx3-ubyte: bad magic number 0x00000801, "
        r"expected 0x00000803",
    ):
        load_mnist(tmp_path)


# --- real MNIST ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist(real_mnist_dir) -> Dataset:
    return load_dataset("mnist", data_dir=real_mnist_dir)


def test_real_mnist(real_mnist):
    ds = real_mnist
    assert ds.x_train.shape == (24345, 784) and ds.y_train.shape == (24345,)
    assert ds.x_test.shape == (10000, 784) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.image_shape == (1, 28, 28)
    for y in (ds.y_train, ds.y_test):
        assert y.min() == 0 and y.max() == 9
        assert len(np.unique(y)) == 10
    assert abs(float(ds.x_train.mean(dtype=np.float64))) < 1e-4
    assert float(ds.x_train.std(dtype=np.float64)) == pytest.approx(1.0, abs=1e-4)
    # Test split uses the train statistics: close to, but not exactly, standardized.
    assert abs(float(ds.x_test.mean(dtype=np.float64))) < 0.05
    # Familiar MNIST pixel statistics (0.1307 / 0.3081 on the full training set).
    assert ds.mean == pytest.approx(0.1307, abs=0.003) and ds.std == pytest.approx(
        0.3081, abs=0.003
    )
    # The background pixel value (0) maps to -mean/std.
    assert ds.x_train.min() == pytest.approx(-ds.mean / ds.std, rel=1e-5)


# --- digits ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits_dataset()


def test_digits_shapes(digits):
    # 1797 examples, 20% test: round(359.4) = 359 test, 1438 train.
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.x_train.shape == (1438, 64) and digits.x_test.shape == (359, 64)
    assert digits.y_train.shape == (1438,) and digits.y_test.shape == (359,)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert digits.image_shape == (1, 8, 8)
    assert set(np.unique(digits.y_train)) == set(range(10))
    assert abs(float(digits.x_train.mean())) < 1e-5
    assert float(digits.x_train.std()) == pytest.approx(1.0, abs=1e-5)


def test_digits_deterministic_and_disjoint(digits):
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)
    other = load_digits_dataset(seed=1)
    assert not np.array_equal(other.y_train, digits.y_train)
    # The split is a partition of the shipped 1797 images: undo the standardization and the
    # 1/16 scaling, and the rows of train + test are exactly the original rows, reordered.
    from tracegrad.data.digits import load_digits_arrays

    images, targets = load_digits_arrays()
    original = images.reshape(len(images), 64).astype(np.int64)
    both = np.concatenate([digits.x_train, digits.x_test]).astype(np.float64)
    pixels = np.rint((both * digits.std + digits.mean) * 16).astype(np.int64)
    labels = np.concatenate([digits.y_train, digits.y_test])

    def rows_sorted(a):
        return a[np.lexsort(a.T[::-1])]

    np.testing.assert_array_equal(
        rows_sorted(np.column_stack([pixels, labels])),
        rows_sorted(np.column_stack([original, targets])),
    )


def test_shipped_digits_file_is_attributed_and_needs_no_scikit_learn():
    import hashlib
    import subprocess
    import sys

    from tracegrad.data.digits import DIGITS_FILE, load_digits_arrays

    digest = hashlib.sha256(DIGITS_FILE.read_bytes()).hexdigest()
    licence = DIGITS_FILE.with_name("DIGITS_LICENSE.txt").read_text()
    assert digest in licence  # the attribution names exactly this file
    for needle in ("10.24432/C50P49", "CC BY 4.0", "BSD 3-Clause", "scikit-learn developers"):
        assert needle in licence
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    code = ("import sys, tracegrad.data as d; d.load_dataset('digits'); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shipped_digits_equal_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets")
    from tracegrad.data.digits import load_digits_arrays

    images, labels = load_digits_arrays()
    bunch = datasets.load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)


def test_digits_nchw_and_fraction():
    ds = load_dataset("digits", flatten=False)
    assert ds.x_train.shape == (1438, 1, 8, 8) and ds.x_test.shape == (359, 1, 8, 8)
    half = load_digits_dataset(test_fraction=0.5)
    assert len(half.x_test) == 898 and len(half.x_train) == 899  # round(898.5) = 898
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        load_digits_dataset(test_fraction=1.0)


def test_load_dataset_errors():
    with pytest.raises(DataError, match="unknown data set 'cifar'; choose one of digits, mnist"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="mnist: no data_dir given"):
        load_dataset("mnist")


# --- batching --------------------------------------------------------------------------------


def toy(n=23):
    # Row i of x is [i, 100 + i] and y[i] = i, so a batch reveals which examples it holds.
    x = np.stack([np.arange(n), 100 + np.arange(n)], axis=1)
    return x, np.arange(n)


def test_iterate_batches_one_epoch():
    x, y = toy()
    batches = iterate_batches(x, y, batch_size=5, seed=7, epoch=0)
    assert len(batches) == 4  # 23 // 5, last partial batch of 3 dropped
    seen = []
    for xb, yb in batches:
        assert xb.shape == (5, 2) and yb.shape == (5,)
        np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay aligned
        seen.extend(yb.tolist())
    assert len(seen) == 20 and len(set(seen)) == 20  # no repeats within an epoch
    assert seen != sorted(seen)  # actually shuffled


def test_iterate_batches_deterministic_per_seed_and_epoch():
    x, y = toy()

    def order(seed, epoch):
        return np.concatenate([yb for _, yb in iterate_batches(x, y, 5, seed=seed, epoch=epoch)])

    np.testing.assert_array_equal(order(0, 3), order(0, 3))
    assert not np.array_equal(order(0, 0), order(0, 1))
    assert not np.array_equal(order(0, 0), order(1, 0))
    batches = iterate_batches(x, y, 5, seed=0, epoch=2)
    first, second = [yb for _, yb in batches], [yb for _, yb in batches]
    for a, b in zip(first, second):  # re-iterable with the same result
        np.testing.assert_array_equal(a, b)


def test_iterate_batches_keep_last_and_no_shuffle():
    x, y = toy()
    batches = list(iterate_batches(x, y, 5, drop_last=False, shuffle=False))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), np.arange(23))
    shuffled = np.concatenate([yb for _, yb in iterate_batches(x, y, 5, seed=4, drop_last=False)])
    np.testing.assert_array_equal(np.sort(shuffled), np.arange(23))


def test_batching_argument_errors():
    x, y = toy()
    with pytest.raises(ValueError, match="x has 23 examples but y has 22"):
        iterate_batches(x, y[:-1], 5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        iterate_batches(x, y, 0)
    with pytest.raises(ValueError, match="the stream would never yield a batch"):
        BatchStream(x, y, 24)


def test_batch_stream_matches_epochs():
    x, y = toy()
    stream = BatchStream(x, y, batch_size=5, seed=11)
    expected = [yb for e in range(3) for _, yb in iterate_batches(x, y, 5, seed=11, epoch=e)]
    got = [stream.next()[1] for _ in range(12)]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert stream.state_dict()["epoch"] == 2 and stream.state_dict()["position"] == 4
    xb, yb = next(stream)  # iterator protocol; rolls into epoch 3
    np.testing.assert_array_equal(xb[:, 0], yb)
    assert stream.epoch == 3 and stream.position == 1


@pytest.mark.parametrize("taken", [0, 3, 4, 6])  # start, mid-epoch, epoch boundary, next epoch
def test_batch_stream_resume(tmp_path, taken):
    x, y = toy()
    a = BatchStream(x, y, batch_size=5, seed=2)
    for _ in range(taken):
        a.next()
    np.savez(tmp_path / "s.npz", **a.state_dict())  # survives a real checkpoint file
    with np.load(tmp_path / "s.npz") as f:
        state = {k: f[k] for k in f.files}
    b = BatchStream(x, y, batch_size=5, seed=2)
    b.load_state_dict(state)
    for _ in range(9):  # crosses at least two epoch boundaries
        (xa, ya), (xb, yb) = a.next(), b.next()
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


def test_batch_stream_rejects_foreign_state():
    x, y = toy()
    state = BatchStream(x, y, 5, seed=1).state_dict()
    with pytest.raises(ValueError, match="state has seed=1 but this stream has seed=2"):
        BatchStream(x, y, 5, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="state has batch_size=5 but this stream has batch_size=4"):
        BatchStream(x, y, 4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="position=9 out of range"):
        BatchStream(x, y, 5, seed=1).load_state_dict({"epoch": 0, "position": 9})
