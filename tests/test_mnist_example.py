"""examples/mnist.py on a tiny generated IDX set: a 2-step training run in a subprocess,
and checkpoint -> resume giving the same parameters as an uninterrupted run."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_bar_digits

from fastconv import nn

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mnist.py"


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """160 training and 40 test 'digits': the label is drawn as a bright bar position."""
    return write_bar_digits(tmp_path_factory.mktemp("mnist"), {"train": 160, "t10k": 40})


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_step_training_run_subprocess(tiny_mnist, tmp_path):
    metrics = tmp_path / "m.json"
    env = dict(os.environ, FASTCONV_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("FASTCONV_DATA_DIR", None)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--limit", "128", "--epochs", "1", "--data-dir",
         str(tiny_mnist), "--metrics-json", str(metrics), "--no-progress"],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch 1/1" in proc.stdout and "test_accuracy" in proc.stdout
    data = json.loads(metrics.read_text())
    assert list(data) == ["epochs"] and len(data["epochs"]) == 1
    e = data["epochs"][0]
    assert set(e) == {"epoch", "train_seconds", "train_loss", "test_accuracy"}
    assert e["epoch"] == 1 and e["train_seconds"] > 0
    assert np.isfinite(e["train_loss"]) and 0 <= e["test_accuracy"] <= 100


def test_resume_is_bit_exact(tiny_mnist, tmp_path, capsys):
    mnist = load_example()
    common = ["--data-dir", str(tiny_mnist), "--batch-size", "32", "--lr", "0.05",
              "--no-progress", "--seed", "3"]
    full = tmp_path / "full.npz"
    part = tmp_path / "part.npz"
    m_full = mnist.main(common + ["--epochs", "2", "--save", str(full)])
    mnist.main(common + ["--epochs", "1", "--save", str(part)])
    m_resumed = mnist.main(common + ["--epochs", "2", "--resume", str(part), "--save", str(part),
                                     "--metrics-json", str(tmp_path / "m.json")])
    a, b = nn.load(full), nn.load(part)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    for i in a["optimizer"]["state"]:
        np.testing.assert_array_equal(a["optimizer"]["state"][i]["momentum_buffer"],
                                      b["optimizer"]["state"][i]["momentum_buffer"])
    assert a["rng"] == b["rng"]
    drop = ("train_seconds",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in m_full] == \
           [{k: v for k, v in e.items() if k not in drop} for e in m_resumed]
    epochs = json.loads((tmp_path / "m.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]                # history kept across resume
    assert "resumed from" in capsys.readouterr().out
    # options the checkpoint overrides are named, not silently dropped
    mnist.main(common[:4] + ["--lr", "0.1", "--no-progress", "--seed", "3", "--epochs", "3",
                             "--resume", str(part), "--limit", "64"])
    err = capsys.readouterr().err
    assert "--lr 0.1 is ignored" in err and "lr=0.05" in err and "limit=64" in err


def test_cli_errors(tiny_mnist, tmp_path, capsys, monkeypatch):
    mnist = load_example()
    # without a usable GPU, --device cuda is a one-line error (runtime.require's message);
    # faked here so that this process never imports numba.cuda (tests/cuda/test_cuda_nn.py runs
    # the real thing in a subprocess)
    from fastconv.cuda import runtime as rt

    def no_gpu(fn="fastconv"):
        raise RuntimeError(f"{fn}: device='cuda' needs a usable CUDA GPU, but numba.cuda "
                           f"found none")

    monkeypatch.setattr(rt, "require", no_gpu)
    with pytest.raises(SystemExit, match="usable CUDA GPU"):
        mnist.main(["--device", "cuda", "--data-dir", str(tiny_mnist)])
    with pytest.raises(SystemExit):
        mnist.main(["--epochs", "0"])
    # a --data-dir that does not exist falls back to the search order
    monkeypatch.setenv("FASTCONV_DATA_DIR", str(tiny_mnist))
    metrics = mnist.main(["--data-dir", str(tmp_path / "missing"), "--limit", "32",
                          "--epochs", "1", "--no-progress"])
    assert len(metrics) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(SystemExit, match="cannot resume"):
        mnist.main(["--data-dir", str(tiny_mnist), "--resume", str(bad), "--no-progress"])
