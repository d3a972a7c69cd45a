"""IDX file reader and the MNIST loader.

Contract: ``load_idx`` returns the array stored in one IDX file (gzip-compressed
or raw, detected by the gzip magic bytes ``1f 8b``) in native byte order, or
raises ``DataError`` naming the file and what is wrong with it. It never guesses:
the magic number, the dimension header and the exact payload size are all
checked.

IDX layout (big-endian): two zero bytes, a dtype code, the number of dims ``n``,
``n`` uint32 sizes, then the row-major payload. MNIST uses ``0x00000801`` for
the label vectors and ``0x00000803`` for the ``(N, 28, 28)`` image stacks.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset, build_dataset

__all__ = ["IDX_DTYPES", "MNIST_FILES", "load_idx", "load_mnist"]

#: IDX dtype code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

LABELS_MAGIC = 0x00000801
IMAGES_MAGIC = 0x00000803

#: split -> (images file, labels file), without the optional ``.gz`` suffix.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, decompressed if it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an IDX file") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip stream ({exc})") from None


def load_idx(path: str | os.PathLike[str], expect_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a native-byte-order array.

    ``expect_magic`` (e.g. ``0x00000803``) additionally pins the dtype and rank,
    so a labels file passed where images are expected fails here, by name,
    rather than as a shape error deep in training.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated header: {len(data)} bytes, need at least 4")
    magic = int.from_bytes(data[:4], "big")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(
            f"{path}: bad magic number 0x{magic:08X}; an IDX file starts with two zero bytes, "
            f"a dtype code ({codes}) and a nonzero number of dims"
        )
    if expect_magic is not None and magic != expect_magic:
        raise DataError(
            f"{path}: bad magic number 0x{magic:08X}, expected 0x{expect_magic:08X} "
            f"(dtype code 0x{(expect_magic >> 8) & 0xFF:02X}, {expect_magic & 0xFF} dims)"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated header: {ndim} dims need {header_len} bytes, file has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header_len
    if got < expected:
        raise DataError(
            f"{path}: truncated payload: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"file has {got}"
        )
    if got > expected:
        raise DataError(
            f"{path}: wrong size: shape {shape} of {dtype.name} needs {expected} payload bytes, "
            f"file has {got} ({got - expected} extra)"
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    # astype copies: the result is writable, owns its memory and is native-endian.
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _find(data_dir: Path, stem: str) -> Path | None:
    """The raw file if present, else the gzipped one, else None."""
    for name in (stem, stem + ".gz"):
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    return None


def load_mnist(data_dir: str | os.PathLike[str], flatten: bool = True) -> Dataset:
    """Load MNIST from the four standard IDX files (each optionally ``.gz``) in ``data_dir``.

    Image and label counts must agree per split and labels must lie in 0..9,
    so a mismatched or foreign file fails at load time.
    """
    data_dir = Path(data_dir)
    expected = [stem for pair in MNIST_FILES.values() for stem in pair]
    listing = ", ".join(f"{s}[.gz]" for s in expected)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: MNIST directory not found; it should contain {listing}")
    found = {stem: _find(data_dir, stem) for stem in expected}
    missing = [stem for stem, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"{data_dir}: missing MNIST file(s) {', '.join(missing)}; expected {listing}"
        )

    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (img_stem, lbl_stem) in MNIST_FILES.items():
        img_path, lbl_path = found[img_stem], found[lbl_stem]
        assert img_path is not None and lbl_path is not None
        images = load_idx(img_path, expect_magic=IMAGES_MAGIC)
        labels = load_idx(lbl_path, expect_magic=LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(
                f"{img_path}: {len(images)} images but {lbl_path.name} has {len(labels)} labels"
            )
        if len(labels) and labels.max() > 9:
            raise DataError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")
        splits[split] = (images, labels)

    (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
    return build_dataset(
        "mnist", x_tr, y_tr, x_te, y_te, max_value=255.0, num_classes=10, flatten=flatten
    )
