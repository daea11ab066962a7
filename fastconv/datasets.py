"""MNIST and Fashion-MNIST: an IDX reader, a search path and verified downloads.

Files are looked for, per split, in this order:

1. ``root`` (the directory itself, then ``root/<name>``), when given;
2. ``$FASTCONV_DATA_DIR/<name>`` (and ``$FASTCONV_DATA_DIR`` itself for MNIST);
3. for Fashion-MNIST, Debian's ``/usr/share/datasets/fashion-mnist``
   (``apt-get install dataset-fashion-mnist``);
4. the user cache, ``$FASTCONV_CACHE_DIR/<name>`` (default ``~/.cache/fastconv/<name>``).

``<name>`` is ``mnist`` or ``fashion-mnist``. Each file may be gzipped
(``train-images-idx3-ubyte.gz``) or raw (``train-images-idx3-ubyte``). Files found on
disk are trusted as they are (never checksummed: local copies such as re-rendered or
re-compressed ones are fine). Missing files are downloaded, into ``root`` when given,
else into the cache directory, from the standard public mirrors, and kept only if their
SHA-256 matches the official files'.
"""
from __future__ import annotations

import gzip
import sys
import hashlib
import http.client
import math
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from . import _config
from ._fileio import atomic_write

__all__ = ["load_mnist", "load_fashion_mnist", "read_idx", "DATASETS"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: name -> mirrors (tried in order) and the SHA-256 of each official ``.gz`` file
DATASETS = {
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        "system_dirs": (),
    },
    "fashion-mnist": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        "system_dirs": ("/usr/share/datasets/fashion-mnist",),
    },
}

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# -- the IDX format ----------------------------------------------------------------------------
def read_idx(path):
    """Read one IDX file (gzipped or raw) into an ndarray.

    The header is two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions, then one big-endian uint32 per dimension.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.gz`` name is decompressed; anything else is read as raw IDX.

    Returns
    -------
    ndarray of the header's shape (native byte order)

    Raises
    ------
    ValueError
        Wrong magic number, truncated or corrupt file; the message names the file.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from fastconv import datasets
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as fh:
    ...     _ = fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> datasets.read_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: truncated or corrupt gzip file ({exc}); delete it and "
                         f"download it again") from None
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES or not 1 <= data[3] <= 4:
        raise ValueError(f"{path}: not an IDX file (wrong magic number "
                         f"0x{int.from_bytes(data[:4], 'big'):08x}; expected 0x00000801 for "
                         f"labels or 0x00000803 for images)")
    dtype = np.dtype(_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX file (header needs {header} bytes, "
                         f"got {len(data)})")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    n = math.prod(shape) * dtype.itemsize       # Python ints: (65536,) * 4 must not wrap to 0
    if len(data) - header < n:
        raise ValueError(f"{path}: truncated IDX file: shape {shape} needs {n} data bytes, "
                         f"found {len(data) - header}")
    if len(data) - header > n:
        raise ValueError(f"{path}: IDX file has {len(data) - header - n} unexpected trailing "
                         f"bytes after shape {shape}")
    if math.prod(d for d in shape if d) * dtype.itemsize > sys.maxsize:
        # an empty array (a zero dimension) whose other dimensions NumPy cannot hold
        raise ValueError(f"{path}: corrupt IDX header: shape {shape} is larger than any "
                         f"array can be")
    arr = np.frombuffer(data, dtype=dtype, count=n // dtype.itemsize, offset=header)
    return arr.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


# -- finding and fetching ----------------------------------------------------------------------
def _find(directory, stem):
    """The existing file for ``stem`` in ``directory`` (gz preferred, then raw), or None."""
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = Path(directory) / name
        if p.is_file():
            return p
    return None


def _search_dirs(name, root):
    dirs = []
    if root is not None:
        root = Path(root).expanduser()
        dirs += [root, root / name]
    env = _config.data_dir()
    if env is not None:
        dirs.append(env / name)
        if name == "mnist":
            dirs.append(env)
    dirs += [Path(d) for d in DATASETS[name]["system_dirs"]]
    dirs.append(_config.cache_dir() / name)
    return dirs


def _download(name, gz_name, target_dir):
    """Fetch ``gz_name`` into ``target_dir`` from the mirrors, verifying its SHA-256.
    Returns (path or None, list of errors)."""
    info = DATASETS[name]
    expected = info["sha256"][gz_name]
    errors = []
    for mirror in info["mirrors"]:
        url = mirror + gz_name
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                data = resp.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            errors.append(f"{url}: SHA-256 mismatch (got {digest}, expected {expected})")
            continue
        target_dir = Path(target_dir)
        path = target_dir / gz_name
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            errors.append(f"cannot write {path}: {exc}")
            return None, errors
        return path, errors
    return None, errors


def _load(name, root, split, download):
    if split not in _FILES:
        raise ValueError(f"load_{name.replace('-', '_')}: split must be 'train' or 'test', "
                         f"got {split!r}")
    stems = _FILES[split]
    dirs = _search_dirs(name, root)
    paths = None
    for d in dirs:
        found = [_find(d, s) for s in stems]
        if all(found):
            paths = found
            break
    if paths is None:
        target = Path(root).expanduser() if root is not None else _config.cache_dir() / name
        where = "\n".join(f"  {d}" for d in dirs)
        files = ", ".join(s + ".gz" for s in stems)
        if not download:
            raise FileNotFoundError(
                f"{name} {split} files ({files}) not found in any of:\n{where}\n"
                f"Put them in one of these directories (or pass root=, or set "
                f"FASTCONV_DATA_DIR), or call with download=True.")
        paths = []
        for s in stems:
            existing = _find(target, s)
            if existing is not None:
                paths.append(existing)
                continue
            path, errors = _download(name, s + ".gz", target)
            if path is None:
                tried = "\n".join(f"  {e}" for e in errors)
                raise RuntimeError(
                    f"could not download {s}.gz ({name}):\n{tried}\n"
                    f"If this machine is offline, put the four {name} IDX files "
                    f"(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                    f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; gzipped or raw) "
                    f"in one of these directories:\n{where}\n"
                    f"or pass root= (examples/mnist.py: --data-dir) or set FASTCONV_DATA_DIR "
                    f"to the directory that holds them.")
            paths.append(path)
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{paths[0]}: expected uint8 images of shape (N, rows, cols), got "
                         f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{paths[1]}: expected uint8 labels of shape (N,), got "
                         f"{labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{paths[0]} holds {images.shape[0]} images but {paths[1]} holds "
                         f"{labels.shape[0]} labels")
    return images, labels


def load_mnist(root=None, split="train", download=True, *, dataset="mnist"):
    """The MNIST digits: ``(images uint8 (N, 28, 28), labels uint8 (N,))``.

    Parameters
    ----------
    root : str or os.PathLike, optional
        A directory holding the four IDX files (searched first; see the module
        docstring for the whole search order).
    split : {'train', 'test'}
        60,000 training or 10,000 test images.
    download : bool, default True
        Fetch missing files from the public mirrors (SHA-256 verified).
    dataset : {'mnist', 'fashion-mnist'}
        Which of the two same-format datasets to look for (and download).

    Returns
    -------
    images : ndarray, uint8, shape (N, 28, 28)
    labels : ndarray, uint8, shape (N,)

    Raises
    ------
    ValueError
        A truncated file, a wrong IDX magic number or mismatched counts (names the file).
    RuntimeError
        Download failed or checksum mismatch (says where to put the files).
    FileNotFoundError
        Files missing and ``download=False``.

    Examples
    --------
    >>> from fastconv import datasets
    >>> images, labels = datasets.load_mnist(split="test")   # doctest: +SKIP
    >>> images.shape, labels[:5]                              # doctest: +SKIP
    ((10000, 28, 28), array([7, 2, 1, 0, 4], dtype=uint8))
    """
    if dataset not in DATASETS:
        raise ValueError(f"load_mnist: dataset must be one of {tuple(DATASETS)}, got {dataset!r}")
    return _load(dataset, root, split, download)


def load_fashion_mnist(root=None, split="train", download=True):
    """Zalando's Fashion-MNIST, same format and search order as :func:`load_mnist`
    (plus Debian's ``/usr/share/datasets/fashion-mnist``).

    Examples
    --------
    >>> from fastconv import datasets
    >>> datasets.DATASETS["fashion-mnist"]["system_dirs"]
    ('/usr/share/datasets/fashion-mnist',)
    >>> images, labels = datasets.load_fashion_mnist(split="test")   # doctest: +SKIP
    >>> images.shape                                                  # doctest: +SKIP
    (10000, 28, 28)
    """
    return _load("fashion-mnist", root, split, download)
