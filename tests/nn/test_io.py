"""Reliability of fastconv.nn.load (issue 13): every malformed file raises ValueError
naming the file; nothing else escapes (TypeError, AttributeError, NotImplementedError,
RuntimeError, zlib.error, MemoryError ...), and a file either loads exactly what was
saved or fails. Oracle: the object that was saved."""
import io
import json
import math
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastconv import nn

OBJ = {"model": {"0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                 "0.bias": np.array([1.0, -2.0])},
       "step": 3, "betas": (0.9, 0.999), "nan": float("nan"), "name": "net", "none": None,
       "ids": {1: [1, 2]}, "big": 2 ** 100, "fortran": np.asfortranarray(np.ones((2, 3), np.int16))}


# --- helpers ----------------------------------------------------------------------------
def assert_same(got, want, where="top"):
    """Nested equality: arrays equal in dtype, shape, values (NaN == NaN) and layout."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert got.dtype == want.dtype and got.shape == want.shape, where
        np.testing.assert_array_equal(got, want, err_msg=where)
        return
    assert type(got) is type(want), f"{where}: {type(got)} != {type(want)}"
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}/{i}")
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), where
    else:
        assert got == want, where


def loads_or_names_the_file(path, want):
    """nn.load(path) returns ``want`` exactly, or raises ValueError whose message names path.
    Returns "ok" or "error"."""
    try:
        got = nn.load(path)
    except ValueError as exc:
        assert str(path) in str(exc), f"the message does not name the file: {exc}"
        return "error"
    assert_same(got, want)
    return "ok"


def saved_bytes(tmp_path, obj=OBJ, writer=None):
    path = tmp_path / "good.npz"
    (writer or nn.save)(obj, path)
    return path.read_bytes()


def zip_with_members(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


# --- sweeps over corrupted and truncated files ------------------------------------------
@pytest.mark.parametrize("kind", ["fastconv", "savez", "savez_compressed"])
def test_every_single_byte_corruption_loads_or_names_the_file(tmp_path, kind):
    if kind == "fastconv":
        obj, good = OBJ, saved_bytes(tmp_path)
        patterns = (0xFF, 0x01, 0x80, 0x20)
    else:
        obj = {"w": np.arange(5.0), "i": np.array([[1, 2]], np.int8)}
        writer = getattr(np, kind)
        good = saved_bytes(tmp_path, obj, lambda o, p: writer(p, **o))
        patterns = (0xFF, 0x01, 0x80)
    path = tmp_path / "flipped.npz"
    path.write_bytes(good)
    seen = {"ok": 0, "error": 0}
    # patch bytes in place: truncating and rewriting a file costs a flush on ext4
    with open(path, "r+b", buffering=0) as fh:
        for i in range(len(good)):
            for pat in patterns:
                fh.seek(i)
                fh.write(bytes([good[i] ^ pat]))
                seen[loads_or_names_the_file(path, obj)] += 1
            fh.seek(i)
            fh.write(good[i:i + 1])
    assert seen["error"] > 0 and seen["ok"] > 0, seen


@pytest.mark.parametrize("kind", ["fastconv", "savez_compressed"])
def test_every_truncation_names_the_file(tmp_path, kind):
    if kind == "fastconv":
        obj, good = OBJ, saved_bytes(tmp_path)
    else:
        obj = {"w": np.arange(5.0)}
        good = saved_bytes(tmp_path, obj, lambda o, p: np.savez_compressed(p, **o))
    for n in range(len(good)):
        path = tmp_path / f"short{n}.npz"           # a new file: no flush on truncation
        path.write_bytes(good[:n])
        assert loads_or_names_the_file(path, obj) == "error", n
        path.unlink()
    path = tmp_path / "long.npz"
    # and trailing garbage after a complete archive is harmless or an error, never a crash
    path.write_bytes(good + b"\0" * 7)
    loads_or_names_the_file(path, obj)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                min_size=1, max_size=6))
def test_random_multi_byte_corruption(tmp_path, edits):
    good = saved_bytes(tmp_path)
    bad = bytearray(good)
    for pos, val in edits:
        bad[int(pos * len(bad))] = val
    path = tmp_path / f"edited{hash(bytes(bad))}.npz"
    path.write_bytes(bytes(bad))
    try:
        loads_or_names_the_file(path, OBJ)
    finally:
        path.unlink()


# --- the reported cases, one by one -----------------------------------------------------
def test_npy_instead_of_npz(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.ones(3))
    with pytest.raises(ValueError, match="weights.npy"):
        nn.load(path)


def test_other_non_zip_files(tmp_path):
    for name, data in (("empty.npz", b""), ("text.npz", b"hello"),
                       ("pickle.npz", b"\x80\x04\x95"), ("json.npz", b"{}")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=name):
            nn.load(path)
    with pytest.raises(ValueError, match="a_dir"):
        (tmp_path / "a_dir").mkdir()
        nn.load(tmp_path / "a_dir")
    with pytest.raises(FileNotFoundError):
        nn.load(tmp_path / "missing.npz")


def _central_entry(data):
    return data.index(b"PK\x01\x02")


@pytest.mark.parametrize("field, value", [
    ("method", 99),        # unknown compression: NotImplementedError inside zipfile
    ("method", 14),        # LZMA with a stored body
    ("flags", 0x1),        # 'encrypted': RuntimeError inside zipfile
    ("flags", 0x40),       # 'strong encryption': NotImplementedError inside zipfile
    ("flags", 0x800),      # UTF-8 names: still readable (ASCII names)
])
def test_corrupt_central_directory(tmp_path, field, value):
    good = bytearray(saved_bytes(tmp_path))
    c = _central_entry(good)
    off = {"flags": 8, "method": 10}[field]
    struct.pack_into("<H", good, c + off, value)
    path = tmp_path / "cd.npz"
    path.write_bytes(bytes(good))
    loads_or_names_the_file(path, OBJ)
    if field == "method" or value in (0x1, 0x40):
        with pytest.raises(ValueError, match="cd.npz"):
            nn.load(path)


FMT = "fastconv-state/1"


@pytest.mark.parametrize("header", [[], 3, FMT, None, 2.5, True,
                                    {"format": FMT},
                                    {"format": "fastconv-state/2", "root": {}},
                                    {"format": FMT, "root": {"__array__": "nope"}},
                                    {"format": FMT, "root": {"__array__": []}},
                                    {"format": FMT, "root": {"__dict__": 5}},
                                    {"format": FMT, "root": {"__dict__": [[1, 2, 3]]}},
                                    {"format": FMT, "root": {"__dict__": [[[1], 2]]}},
                                    {"format": FMT, "root": {"__float__": "abc"}},
                                    {"format": FMT, "root": {"__float__": [1]}},
                                    {"format": FMT, "root": {"__tuple__": 7}}])
def test_malformed_json_headers(tmp_path, header):
    path = tmp_path / "hdr.npz"
    zip_with_members(path, {"__fastconv__.json": json.dumps(header),
                            "w.npy": npy_bytes(np.ones(2))})
    with pytest.raises(ValueError, match="hdr.npz"):
        nn.load(path)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"{", b"[" * 100000 + b"]" * 100000, b"NaN"],
                         ids=["not-utf8", "truncated", "deeply-nested", "NaN"])
def test_unparseable_headers(tmp_path, raw):
    path = tmp_path / "raw.npz"
    zip_with_members(path, {"__fastconv__.json": raw})
    with pytest.raises(ValueError, match="raw.npz"):
        nn.load(path)


def test_array_headers_are_checked_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    good = npy_bytes(np.ones(2))
    # the same data under a header claiming 10**12 float64 elements (8 TB)
    hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    fake = np.lib.format.MAGIC_PREFIX + b"\x01\x00"
    body = hdr.encode("latin1").ljust(118) + b"\n"
    fake += struct.pack("<H", len(body)) + body + good[-16:]
    for member in (fake, good[:-1], good + b"\0", b"\x93NUMPY\x09\x00junk"):
        zip_with_members(path, {"w.npy": member})
        with pytest.raises(ValueError, match="huge.npz"):
            nn.load(path)


def test_object_arrays_are_not_unpickled(tmp_path):
    path = tmp_path / "obj.npz"
    zip_with_members(path, {"o.npy": npy_bytes(np.array([{"a": 1}], dtype=object))})
    with pytest.raises(ValueError, match="obj.npz"):
        nn.load(path)


def test_plain_and_compressed_npz_still_load(tmp_path):
    obj = {"w": np.arange(4.0).reshape(2, 2), "f": np.asfortranarray(np.eye(3, dtype=np.float32)),
           "s": np.array("text"), "e": np.zeros((0, 3))}
    for writer in (np.savez, np.savez_compressed):
        path = tmp_path / f"{writer.__name__}.npz"
        writer(path, **obj)
        got = nn.load(path)
        assert_same(got, obj)
        assert got["f"].flags.f_contiguous and got["w"].flags.writeable
    nn.save(OBJ, tmp_path / "ok.npz")
    assert_same(nn.load(tmp_path / "ok.npz"), OBJ)
