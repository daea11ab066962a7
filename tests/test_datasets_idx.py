"""Reliability of the IDX reader (issue 13): every malformed file (gzipped or raw) raises
ValueError naming the file, whatever its header claims (sizes beyond int64 included);
every well-formed one loads exactly. Files are written here (no real data).

Oracle: a small independent IDX parser (Python ints, the format's definition) applied to
the same bytes, after ``gzip.decompress`` for the gzipped files."""
import gzip
import math
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastconv import datasets

TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --- helpers ----------------------------------------------------------------------------
def idx_file(arr, code):
    arr = np.asarray(arr, dtype=TYPES[code])
    header = bytes([0, 0, code, arr.ndim]) + b"".join(n.to_bytes(4, "big") for n in arr.shape)
    return header + arr.tobytes()


def reference_idx(data):
    """The array an IDX byte string holds, or None if it is not a well-formed IDX file."""
    if len(data) < 4 or data[0] or data[1] or data[2] not in TYPES or not 1 <= data[3] <= 4:
        return None
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        return None
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dt = np.dtype(TYPES[data[2]])
    if len(data) - 4 - 4 * ndim != math.prod(shape) * dt.itemsize:
        return None
    if math.prod(d for d in shape if d) * dt.itemsize > sys.maxsize:
        return None                  # no array has this shape, even with a zero dimension
    return np.frombuffer(data[4 + 4 * ndim:], dtype=dt).reshape(shape)


def reference_file(blob, gz):
    if gz:
        try:
            blob = gzip.decompress(blob)
        except Exception:       # noqa: BLE001 -- any failure: not a readable gzip stream
            return None
    return reference_idx(blob)


def reads_or_names_the_file(path, want):
    """read_idx(path) equals ``want`` (values, shape and dtype up to byte order), or, when
    ``want`` is None, raises ValueError whose message names the file."""
    if want is None:
        with pytest.raises(ValueError) as info:
            datasets.read_idx(path)
        assert str(path) in str(info.value), f"the message does not name the file: {info.value}"
        return
    got = datasets.read_idx(path)
    assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


FILES = {
    "images": (np.arange(12).reshape(3, 2, 2), 0x08),
    "labels": (np.array([7, 2, 1]), 0x08),
    "int16": (np.array([[-300, 2, 1000], [0, 1, -1]]), 0x0B),
    "float64": (np.array([1.5, -np.inf]), 0x0E),
}


# --- sweeps -----------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("name", list(FILES))
def test_every_single_byte_corruption(tmp_path, name, gz):
    arr, code = FILES[name]
    raw = idx_file(arr, code)
    good = gzip.compress(raw, mtime=0) if gz else raw
    path = tmp_path / (f"{name}-idx-ubyte" + (".gz" if gz else ""))
    path.write_bytes(good)
    reads_or_names_the_file(path, reference_idx(raw))
    # patch bytes in place (rewriting a truncated file costs a flush on ext4)
    with open(path, "r+b", buffering=0) as fh:
        for i in range(len(good)):
            for pat in (0xFF, 0x01, 0x80, 0x10):
                bad = bytearray(good)
                bad[i] ^= pat
                fh.seek(i)
                fh.write(bad[i:i + 1])
                reads_or_names_the_file(path, reference_file(bytes(bad), gz))
            fh.seek(i)
            fh.write(good[i:i + 1])


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("name", list(FILES))
def test_every_truncation_and_extension(tmp_path, name, gz):
    arr, code = FILES[name]
    raw = idx_file(arr, code)
    good = gzip.compress(raw, mtime=0) if gz else raw
    suffix = ".gz" if gz else ""
    for n in range(len(good)):
        path = tmp_path / f"{name}{n}-idx{suffix}"
        path.write_bytes(good[:n])
        reads_or_names_the_file(path, reference_file(good[:n], gz))
        path.unlink()
    for extra in (b"\0", b"\0" * 3, b"junk", good):
        path = tmp_path / f"{name}-long{len(extra)}-idx{suffix}"
        path.write_bytes(good + extra)
        reads_or_names_the_file(path, reference_file(good + extra, gz))


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(code=st.sampled_from(sorted(TYPES)), ndim=st.integers(1, 4),
       dims=st.lists(st.one_of(st.integers(0, 4), st.integers(0, 2 ** 32 - 1),
                               st.integers(0, 31).map(lambda e: 2 ** e),   # products that wrap
                               st.sampled_from([2 ** 16, 2 ** 31, 2 ** 32 - 1])),
                     min_size=4, max_size=4),
       n_data=st.integers(0, 80), gz=st.booleans())
def test_arbitrary_headers(tmp_path, code, ndim, dims, n_data, gz):
    # any header (sizes far beyond int64 included) over any amount of data
    raw = bytes([0, 0, code, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims[:ndim])
    raw += bytes(range(n_data))
    path = tmp_path / (f"h{hash(raw) & 0xFFFFFF}-idx" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    try:
        reads_or_names_the_file(path, reference_idx(raw))
    finally:
        path.unlink()


@pytest.mark.parametrize("dims", [(0, 66, 32537632, 4294967169), (2 ** 32 - 1, 0, 2 ** 32 - 1),
                                  (0, 2 ** 31, 2 ** 31)])
def test_empty_shapes_no_array_can_hold(tmp_path, dims):
    # zero data bytes match the header, but NumPy cannot make an array of that shape
    path = tmp_path / "empty-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims))
    reads_or_names_the_file(path, reference_idx(path.read_bytes()))


# --- the reported case ------------------------------------------------------------------
@pytest.mark.parametrize("dims", [(65536,) * 4, (2 ** 32 - 1,) * 2, (2 ** 32 - 1,) * 4,
                                  (2 ** 16, 2 ** 16, 2 ** 16, 2 ** 16 + 1)])
@pytest.mark.parametrize("gz", [False, True])
def test_sizes_that_overflow_int64(tmp_path, dims, gz):
    raw = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path = tmp_path / ("big-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError, match="truncated") as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


def test_load_mnist_names_the_corrupt_file(tmp_path):
    images = idx_file(np.zeros((2, 28, 28)), 0x08)
    labels = idx_file(np.array([1, 2]), 0x08)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    bad = bytes([0, 0, 8, 4]) + (65536).to_bytes(4, "big") * 4
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bad)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte"):
        datasets.load_mnist(root=tmp_path, split="test", download=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels)
    got_images, got_labels = datasets.load_mnist(root=tmp_path, split="test", download=False)
    assert got_images.shape == (2, 28, 28) and got_labels.tolist() == [1, 2]
