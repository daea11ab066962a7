"""``save`` / ``load``: (nested) state dicts as ``.npz`` files, written atomically.

Arrays are stored as ``.npz`` members named by their path in the nested structure
(``"model/0.weight"``), so ``numpy.load`` reads them directly. Everything else (ints
of any size, floats, strings, bools, None, lists, tuples, dicts with int or str keys,
e.g. an optimizer's ``param_groups`` or a generator's state) goes into one JSON member
that also records where each array belongs. Nothing is pickled.
"""
from __future__ import annotations

import io
import json
import math
import numbers
import os
import zipfile
from pathlib import Path

import numpy as np

from .._fileio import atomic_write

__all__ = ["save", "load"]

_META = "__fastconv__.json"
_FORMAT = "fastconv-state/1"


def _encode(obj, path, arrays, fn):
    if isinstance(obj, np.ndarray):
        arr = obj
        if arr.dtype == object:
            raise TypeError(f"{fn}: cannot store an object array at {'/'.join(path) or 'top'}")
        name = "/".join(path) or "array"
        base, n = name, 1
        while name in arrays or name == _META:
            name = f"{base}#{n}"
            n += 1
        arrays[name] = arr
        return {"__array__": name}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.str_):
        return str(obj)
    if isinstance(obj, (numbers.Integral, np.integer)):
        return int(obj)
    if isinstance(obj, (numbers.Real, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, path + (str(i),), arrays, fn) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, path + (str(i),), arrays, fn) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = [(k, _encode(v, path + (str(k),), arrays, fn)) for k, v in obj.items()]
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return dict(items)
        keys = []
        for k, _ in items:
            if isinstance(k, bool) or not isinstance(k, (str, numbers.Integral, np.integer)):
                raise TypeError(f"{fn}: dict keys must be str or int, got {k!r} at "
                                f"{'/'.join(path) or 'top'}")
            keys.append(k if isinstance(k, str) else int(k))
        return {"__dict__": [[k, v] for k, (_, v) in zip(keys, items)]}
    raise TypeError(f"{fn}: cannot store a {type(obj).__name__} at {'/'.join(path) or 'top'}; "
                    f"use arrays, numbers, strings, None, lists, tuples and dicts")


def _decode(obj, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__tuple__" in obj:
            return tuple(_decode(v, arrays) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
        return {k: _decode(v, arrays) for k, v in obj.items()}
    return obj


def save(obj, path):
    """Store a (nested) state dict in a ``.npz`` file, atomically.

    The file is written to a temporary file in the same directory and renamed over
    ``path`` (``os.replace``), so a crash never leaves a half-written checkpoint.

    Parameters
    ----------
    obj : dict, list or tuple
        Arrays, numbers, strings, bools, None and nested lists/tuples/dicts of them, e.g.
        ``{"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}``.
    path : str or os.PathLike
        Written exactly as given (no suffix is added).

    Examples
    --------
    >>> import os, tempfile
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Linear(3, 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
    >>> nn.save({"model": model.state_dict(), "epoch": 1}, path)
    >>> state = nn.load(path)
    >>> list(state["model"]), state["epoch"]
    (['0.weight', '0.bias'], 1)
    """
    fn = "save"
    arrays = {}
    meta = {"format": _FORMAT, "root": _encode(obj, (), arrays, fn)}
    with atomic_write(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.require(arr, requirements="C"),
                                              allow_pickle=False)
            zf.writestr(_META, json.dumps(meta, allow_nan=False))


def _read_npy(data: bytes):
    """An array from the bytes of a ``.npy`` member, its header checked against its length
    before anything is allocated. Object arrays are refused (nothing is unpickled)."""
    fmt = np.lib.format
    fp = io.BytesIO(data)
    version = fmt.read_magic(fp)
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError(f"unsupported .npy format version {version}")
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(fp)
    if dtype.hasobject:
        raise ValueError("object arrays are not loaded (that would unpickle)")
    count = math.prod(shape)
    size = len(data) - fp.tell()
    if count * dtype.itemsize != size:
        raise ValueError(f"a .npy member holds {size} data bytes, its header says "
                         f"{shape} {dtype} ({count * dtype.itemsize} bytes)")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=fp.tell())
    return arr.reshape(shape, order="F" if fortran else "C").copy(order="K")


def _check_entry_count(zf):
    # zipfile reads the central directory up to its declared byte size and ignores the
    # declared number of entries: a corrupted length field inside it silently drops the
    # members after it. Compare the two (zipfile's own end-record reader, zip64 aware).
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:                                 # pragma: no cover
        return
    end = end_record(zf.fp)
    declared = end[zipfile._ECD_ENTRIES_TOTAL]
    if declared != len(zf.infolist()) or end[zipfile._ECD_ENTRIES_THIS_DISK] != declared:
        raise ValueError(f"its zip directory declares {declared} members but lists "
                         f"{len(zf.infolist())}")


def _read_npz(path):
    # name -> array (raw bytes for a non-.npy member, as numpy.load gives), and the header
    arrays, meta_raw = {}, None
    with zipfile.ZipFile(path) as zf:
        _check_entry_count(zf)
        for info in zf.infolist():
            name = info.filename
            data = zf.read(info)                      # checks the CRC
            if name == _META:
                meta_raw = data
                continue
            if name.endswith(".npy"):
                name = name[:-4]
            if name in arrays:
                raise ValueError(f"member {name!r} appears twice")
            is_npy = data.startswith(np.lib.format.MAGIC_PREFIX)
            arrays[name] = _read_npy(data) if is_npy or info.filename.endswith(".npy") else data
    return arrays, meta_raw


def load(path):
    """Read a file written by :func:`save` (arrays come back as ndarrays).

    Plain ``.npz`` files (``numpy.savez``) load as a dict of arrays. Nothing is unpickled.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Anything else that is not a readable ``.npz`` archive written by :func:`save` or
        ``numpy.savez``: another format (a ``.npy``, text), a truncated or corrupted
        archive (bad CRC, directory, compression method or flags), a corrupted array
        header, an unreadable or malformed fastconv header. The message names the file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from fastconv import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "state.npz")
    >>> nn.save({"w": np.arange(3.0), "step": 7, "betas": (0.9, 0.999)}, path)
    >>> nn.load(path)
    {'w': array([0., 1., 2.]), 'step': 7, 'betas': (0.9, 0.999)}
    """
    path = Path(os.fspath(path))
    try:
        arrays, meta_raw = _read_npz(path)
    except FileNotFoundError:
        raise
    except Exception as exc:        # noqa: BLE001 -- every parse failure of untrusted bytes
        # (zipfile alone raises BadZipFile, NotImplementedError, RuntimeError, EOFError,
        # zlib.error, struct.error, UnicodeDecodeError, OverflowError ... on corrupt input)
        raise ValueError(f"load: {path} is not a readable fastconv/.npz file "
                         f"({type(exc).__name__}: {exc})") from exc
    if meta_raw is None:
        return arrays
    try:
        meta = json.loads(meta_raw.decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"the header is a JSON {type(meta).__name__}, not an object")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unknown format {meta.get('format')!r}")
        if "root" not in meta:
            raise ValueError("the header has no 'root'")
        return _decode(meta["root"], arrays)
    except Exception as exc:        # noqa: BLE001 -- a malformed header, whatever its shape
        raise ValueError(f"load: {path} has an unreadable fastconv header "
                         f"({type(exc).__name__}: {exc})") from exc
