"""fastconv.datasets on tiny IDX files written here (no real data, no network)."""
import gzip
import hashlib
import http.client
import io
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import idx_bytes

from fastconv import datasets

STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def make_split(rng, n):
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8))


def write_set(directory, seed=0, gz=True, splits=("train", "test"), n=None):
    """Write a tiny MNIST-format set; returns {split: (images, labels)}."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits:
        images, labels = make_split(rng, n or (12 if split == "train" else 5))
        for stem, arr in zip(STEMS[split], (images, labels)):
            data = idx_bytes(arr)
            if gz:
                (directory / (stem + ".gz")).write_bytes(gzip.compress(data))
            else:
                (directory / stem).write_bytes(data)
        out[split] = (images, labels)
    return out


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """Isolate from the machine: empty cache dir, no FASTCONV_DATA_DIR, no system dirs,
    and any network access fails loudly."""
    monkeypatch.delenv("FASTCONV_DATA_DIR", raising=False)
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    for info in datasets.DATASETS.values():
        monkeypatch.setitem(info, "system_dirs", ())

    def offline(url, *a, **k):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gz_and_raw(no_env, gz):
    root = no_env / "data"
    want = write_set(root, gz=gz)
    for split in ("train", "test"):
        images, labels = datasets.load_mnist(root, split)
        assert images.dtype == np.uint8 and labels.dtype == np.uint8
        assert images.shape == (len(labels), 28, 28)
        np.testing.assert_array_equal(images, want[split][0])
        np.testing.assert_array_equal(labels, want[split][1])


def test_read_idx_other_types_and_byte_order(tmp_path):
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    path = tmp_path / "x-idx2-int"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
                     + arr.tobytes())
    got = datasets.read_idx(path)
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_names_the_file(no_env, gz):
    root = no_env / "data"
    write_set(root, gz=gz)
    name = STEMS["train"][0] + (".gz" if gz else "")
    path = root / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + ".*(truncated|corrupt)"):
        datasets.load_mnist(root, "train")
    # header cut short
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03\x00") if gz else b"\x00\x00\x08\x03\x00")
    with pytest.raises(ValueError, match="truncated"):
        datasets.load_mnist(root, "train")


def test_wrong_magic_names_the_file(no_env):
    root = no_env / "data"
    write_set(root, gz=False)
    path = root / STEMS["test"][1]
    path.write_bytes(b"\x12\x34\x56\x78" + path.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*magic number 0x12345678"):
        datasets.load_mnist(root, "test")


def test_inconsistent_counts(no_env):
    root = no_env / "data"
    write_set(root, gz=False)
    (root / STEMS["test"][1]).write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(ValueError, match="5 images but .* 3 labels"):
        datasets.load_mnist(root, "test")
    (root / STEMS["test"][0]).write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(ValueError, match="expected uint8 images"):
        datasets.load_mnist(root, "test")


def test_search_order(no_env, monkeypatch):
    env_dir = no_env / "env"
    cache = no_env / "cache"
    root = no_env / "root"
    in_cache = write_set(cache / "mnist", seed=1)
    assert np.array_equal(datasets.load_mnist()[1], in_cache["train"][1])       # cache last
    in_env = write_set(env_dir, seed=2)
    monkeypatch.setenv("FASTCONV_DATA_DIR", str(env_dir))
    assert np.array_equal(datasets.load_mnist()[1], in_env["train"][1])         # env before cache
    in_env_sub = write_set(env_dir / "mnist", seed=3)
    assert np.array_equal(datasets.load_mnist()[1], in_env_sub["train"][1])     # env/mnist first
    in_root = write_set(root, seed=4)
    assert np.array_equal(datasets.load_mnist(root)[1], in_root["train"][1])    # root first
    # a root without the files falls through to the other places
    assert np.array_equal(datasets.load_mnist(no_env / "empty")[1], in_env_sub["train"][1])
    # per split: a directory with only the test files serves the test split only
    only_test = write_set(no_env / "partial", seed=5, splits=("test",))
    assert np.array_equal(datasets.load_mnist(no_env / "partial", "test")[1], only_test["test"][1])
    assert np.array_equal(datasets.load_mnist(no_env / "partial", "train")[1],
                          in_env_sub["train"][1])


def test_fashion_mnist(no_env, monkeypatch):
    env_dir = no_env / "env"
    write_set(env_dir, seed=1)                                 # MNIST files directly in env
    monkeypatch.setenv("FASTCONV_DATA_DIR", str(env_dir))
    system = no_env / "usr-share-fashion"
    fashion = write_set(system, seed=2)
    monkeypatch.setitem(datasets.DATASETS["fashion-mnist"], "system_dirs", (str(system),))
    # the MNIST files in $FASTCONV_DATA_DIR itself are not taken for Fashion-MNIST
    got = datasets.load_fashion_mnist(split="test")
    np.testing.assert_array_equal(got[1], fashion["test"][1])
    np.testing.assert_array_equal(datasets.load_mnist(split="test", dataset="fashion-mnist")[0],
                                  fashion["test"][0])
    in_sub = write_set(env_dir / "fashion-mnist", seed=3)
    np.testing.assert_array_equal(datasets.load_fashion_mnist()[1], in_sub["train"][1])
    with pytest.raises(ValueError, match="dataset"):
        datasets.load_mnist(dataset="cifar")


def test_bad_split(no_env):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        datasets.load_mnist(split="val")


def test_offline_error_says_where_to_put_files(no_env):
    with pytest.raises(RuntimeError) as info:
        datasets.load_mnist(split="test")
    msg = str(info.value)
    assert "network disabled" in msg and "offline" in msg
    assert str(no_env / "cache" / "mnist") in msg and "FASTCONV_DATA_DIR" in msg
    assert not (no_env / "cache" / "mnist").exists()          # nothing half-written
    with pytest.raises(FileNotFoundError, match="not found"):
        datasets.load_mnist(split="test", download=False)


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("failure", [urllib.error.URLError("first mirror down"),
                                     http.client.IncompleteRead(b"abc", 100),
                                     ConnectionResetError("reset by peer")],
                         ids=["URLError", "IncompleteRead", "ConnectionReset"])
def test_download_verifies_sha256(no_env, monkeypatch, failure):
    rng = np.random.default_rng(0)
    images, labels = make_split(rng, 4)
    payload = {STEMS["test"][0] + ".gz": gzip.compress(idx_bytes(images)),
               STEMS["test"][1] + ".gz": gzip.compress(idx_bytes(labels))}
    sums = dict(datasets.DATASETS["mnist"]["sha256"])
    for name, data in payload.items():
        sums[name] = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(datasets.DATASETS["mnist"], "sha256", sums)
    tried = []

    def fake_urlopen(url, timeout=None):
        tried.append(url)
        if url.startswith(datasets.DATASETS["mnist"]["mirrors"][0]):
            raise failure
        return FakeResponse(payload[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    got = datasets.load_mnist(split="test")
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    saved = no_env / "cache" / "mnist" / (STEMS["test"][0] + ".gz")
    assert saved.is_file()
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(saved).st_mode & 0o777 == 0o666 & ~umask       # as a plain open() makes it
    assert len(tried) == 4                                    # two files, first mirror failed
    # a second call uses the files on disk, without the network
    monkeypatch.setattr(urllib.request, "urlopen", None)
    np.testing.assert_array_equal(datasets.load_mnist(split="test")[1], labels)


def test_checksum_mismatch_is_rejected(no_env, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: FakeResponse(b"tampered"))
    root = no_env / "dl"
    with pytest.raises(RuntimeError, match="SHA-256 mismatch") as info:
        datasets.load_mnist(root, "train")
    assert str(root) in str(info.value)
    assert not root.exists() or not any(root.iterdir())       # nothing kept


def test_local_files_are_not_checksummed(no_env):
    # the tiny files here match no official checksum, yet load (local copies are trusted)
    root = no_env / "data"
    write_set(root)
    assert datasets.load_mnist(root, "test")[0].shape == (5, 28, 28)
