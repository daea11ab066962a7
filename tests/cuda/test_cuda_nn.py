"""fastconv.nn and fastconv.optim on the GPU against the CPU path (the oracle): a tiny CNN's
forward, loss, every parameter gradient and optimiser steps after ``model.to("cuda")``,
state dicts, and ``examples/mnist.py --device cuda``.

Without a GPU this module runs under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
set by tests/cuda/cudasim.py before numba.cuda is imported) on tiny shapes.
"""
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_bar_digits
# cudasim sets up numba.cuda first; hardware_launch_rules is an autouse fixture
from cudasim import SIM, cuda, hardware_launch_rules, rt  # noqa: E402,F401
from fastconv import nn, optim  # noqa: E402

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:.*Grid size.*"),      # tiny launches, by design
              pytest.mark.filterwarnings("ignore:overflow encountered")]  # simulator's uint64 hash
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist.py"


def host(a):
    return a.copy_to_host() if rt.is_device(a) else np.asarray(a)


def close(got, want, rtol=1e-5):
    got, want = host(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1e-2, float(np.abs(want).max())))


def tiny_cnn():
    nn.manual_seed(7)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(18, 3), nn.LogSoftmax(dim=1))


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    return rng.standard_normal((2, 1, 8, 8)).astype(np.float32), np.array([2, 0])


def forward_backward(model, x, t, loss_fn):
    out = model(x)
    loss = loss_fn(out, t)
    gx = model.backward(loss_fn.backward())
    return out, loss, gx


# --- the tiny CNN: forward, loss, gradients, optimiser steps --------------------------------
def test_tiny_cnn_forward_loss_gradients_and_steps(batch):
    x, t = batch
    cpu, gpu = tiny_cnn(), tiny_cnn().to("cuda")
    assert gpu.device == "cuda" and cpu.device == "cpu"
    assert all(rt.is_device(p.data) for p in gpu.parameters())
    loss_fn = nn.NLLLoss()
    out_c, loss_c, gx_c = forward_backward(cpu, x, t, loss_fn)
    out_g, loss_g, gx_g = forward_backward(gpu, cuda.to_device(x), cuda.to_device(t), loss_fn)
    assert rt.is_device(out_g) and rt.is_device(gx_g)
    assert isinstance(loss_g, float)
    close(out_g, out_c)
    assert loss_g == pytest.approx(loss_c, rel=1e-5)
    close(gx_g, gx_c)
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert rt.is_device(pg.grad), name
        close(pg.grad, pc.grad)

    # two SGD steps (the first fills the momentum buffer, the second uses it)
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    opt_c, opt_g = optim.SGD(cpu.parameters(), **kw), optim.SGD(gpu.parameters(), **kw)
    for _ in range(2):
        opt_c.step()
        opt_g.step()
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert rt.is_device(pg.data), name
        close(pg.data, pc.data)
    sc, sg = opt_c.state_dict(), opt_g.state_dict()
    for i in sc["state"]:
        buf = sg["state"][i]["momentum_buffer"]
        assert isinstance(buf, np.ndarray)
        close(buf, sc["state"][i]["momentum_buffer"])

    # one Adam step (weight decay, amsgrad) from the same gradients
    kw = dict(lr=0.05, weight_decay=0.1, amsgrad=True)
    opt_c, opt_g = optim.Adam(cpu.parameters(), **kw), optim.Adam(gpu.parameters(), **kw)
    opt_c.step()
    opt_g.step()
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        close(pg.data, pc.data)
    opt_c.zero_grad(set_to_none=False)
    opt_g.zero_grad(set_to_none=False)
    assert all(float(np.abs(host(p.grad)).max()) == 0 for p in gpu.parameters())


def test_avgpool_padding_cross_entropy_sum_and_grad_accumulation(batch):
    x, t = batch
    x = np.concatenate([x, x[::-1] * 0.5])                     # (4, 1, 8, 8)
    t = np.array([2, 0, 1, 1], np.uint8)

    def build():
        nn.manual_seed(11)
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, stride=(1, 2)), nn.AvgPool2d(2),
                             nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))

    cpu, gpu = build(), build().to("cuda")
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for _ in range(2):                                        # .grad accumulates
        out_c, loss_c, gx_c = forward_backward(cpu, x, t, loss_fn)
        out_g, loss_g, gx_g = forward_backward(gpu, cuda.to_device(x), t, loss_fn)
    close(out_g, out_c)
    assert loss_g == pytest.approx(loss_c, rel=1e-5)
    close(gx_g, gx_c)
    for pc, pg in zip(cpu.parameters(), gpu.parameters()):
        close(pg.grad, pc.grad)


def test_dropout_and_eval_mode():
    drop = nn.Dropout(0.5, rng=0)
    x = cuda.to_device(np.ones((4, 50), np.float32))
    y = drop(x)
    assert rt.is_device(y)
    yh = y.copy_to_host()
    assert set(np.unique(yh)) <= {0.0, 2.0} and 0.2 < (yh == 0).mean() < 0.8
    g = drop.backward(cuda.to_device(np.full((4, 50), 3.0, np.float32)))
    np.testing.assert_array_equal(host(g), 3 * yh)             # x = 1: y is the mask
    drop.eval()
    np.testing.assert_array_equal(host(drop(x)), 1.0)


# --- empty batches and non-contiguous inputs ------------------------------------------------
def test_empty_batch_forward_backward_matches_cpu():
    x, t = np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64)
    cpu, gpu = tiny_cnn(), tiny_cnn().to("cuda")
    out_c, loss_c, gx_c = forward_backward(cpu, x, t, nn.NLLLoss())
    out_g, loss_g, gx_g = forward_backward(gpu, cuda.to_device(x), cuda.to_device(t), nn.NLLLoss())
    assert rt.is_device(out_g) and out_g.shape == out_c.shape == (0, 3)
    assert np.isnan(loss_g) and np.isnan(loss_c)
    assert gx_g.shape == gx_c.shape == x.shape
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        np.testing.assert_array_equal(host(pg.grad), pc.grad, err_msg=name)
    lin = nn.Linear(4, 3).to("cuda")
    y = lin(cuda.to_device(np.zeros((0, 4), np.float32)))
    assert y.shape == (0, 3)
    assert lin.backward(cuda.to_device(np.zeros((0, 3), np.float32))).shape == (0, 4)
    assert not np.abs(host(lin.weight.grad)).any()


def test_layers_take_non_contiguous_device_views(batch):
    x, _ = batch
    wide = np.concatenate([x, -x], axis=3)                    # (2, 1, 8, 16)
    view = cuda.to_device(wide)[:, :, :, ::2]                 # (2, 1, 8, 8), strided
    want_x = wide[:, :, :, ::2]
    cpu, gpu = tiny_cnn(), tiny_cnn().to("cuda")
    close(gpu(view), cpu(want_x))
    close(gpu.backward(cuda.to_device(np.ones((2, 3), np.float32))), cpu.backward(np.ones((2, 3), np.float32)))
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        close(pg.grad, pc.grad)
    lin_c, lin_g = nn.Linear(4, 3), nn.Linear(4, 3).to("cuda")
    lin_g.load_state_dict(lin_c.state_dict())
    rows = np.arange(24, dtype=np.float32).reshape(6, 4)
    close(lin_g(cuda.to_device(rows)[::2]), lin_c(rows[::2]))


# --- devices and state dicts -----------------------------------------------------------------
def test_state_dict_round_trip_and_back_to_cpu(batch):
    x, t = batch
    gpu = tiny_cnn().to("cuda")
    state = gpu.state_dict()
    assert list(state) == ["0.weight", "0.bias", "4.weight", "4.bias"]
    assert all(type(v) is np.ndarray for v in state.values())
    other = tiny_cnn()
    for p in other.parameters():
        p.data[...] = 0
    other.to("cuda").load_state_dict(state)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    assert rt.is_device(other[0].weight.data)
    # optimiser state: host arrays out, device arrays back in
    opt = optim.SGD(gpu.parameters(), lr=0.1, momentum=0.5)
    forward_backward(gpu, cuda.to_device(x), t, nn.NLLLoss())
    opt.step()
    saved = opt.state_dict()
    assert all(isinstance(s["momentum_buffer"], np.ndarray) for s in saved["state"].values())
    opt2 = optim.SGD(gpu.parameters(), lr=0.1, momentum=0.5)
    opt2.load_state_dict(saved)
    assert all(rt.is_device(s["momentum_buffer"]) for s in opt2.state.values())
    # and back to the CPU: numpy arrays, the same values
    before = gpu.state_dict()
    back = gpu.to("cpu")
    assert back is gpu and gpu.device == "cpu"
    assert all(type(p.data) is np.ndarray for p in gpu.parameters())
    assert all(type(p.grad) is np.ndarray for p in gpu.parameters())
    for k, v in gpu.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    out = gpu(x)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3)


def test_mixed_devices_give_clear_errors(batch):
    x, _ = batch
    with pytest.raises(RuntimeError, match=r"model.to\('cuda'\)"):
        tiny_cnn()(cuda.to_device(x))
    with pytest.raises(RuntimeError, match="host array"):
        tiny_cnn().to("cuda")(x)


# --- conv_transpose2d with output_padding >= stride ---------------------------------------
@pytest.mark.parametrize("algo", ("direct", "im2col"))
def test_conv_transpose2d_output_padding_past_stride(algo):
    import fastconv as fc
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s) for s in ((2, 2, 3, 4), (2, 3, 2, 3), (3,)))
    kw = dict(stride=(1, 2), output_padding=(1, 1), dilation=(2, 2), padding=(1, 0))
    want = fc.conv_transpose2d(x, w, b, **kw)
    close(fc.conv_transpose2d(x, w, b, device="cuda", algorithm=algo, **kw), want, 1e-9)
    got = fc.conv_transpose2d(cuda.to_device(x[0]), cuda.to_device(w), None, algorithm=algo, **kw)
    assert rt.is_device(got)
    close(got, fc.conv_transpose2d(x[0], w, None, **kw), 1e-9)


# --- examples/mnist.py --device cuda ---------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    return write_bar_digits(tmp_path_factory.mktemp("mnist_cuda"), {"train": 64, "t10k": 8})


def _example_env(tmp_path, simulate):
    env = dict(os.environ, FASTCONV_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("FASTCONV_DATA_DIR", None)
    if simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_example_cuda", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mnist_example_device_loop_and_resume(tiny_mnist, tmp_path, monkeypatch, capsys):
    """The --device cuda data path (upload once, per-epoch permutation, gathers, evaluation
    on device, checkpoints of host arrays, exact resume) with a small stand-in network: the
    real one takes minutes per step in the simulator (see the next test). Two steps per
    epoch, the second a partial batch."""
    mnist = load_example()

    def small_model():
        return nn.Sequential(nn.AvgPool2d(7), nn.ReLU(), nn.Flatten(),
                             nn.Linear(16, 10, bias=False), nn.LogSoftmax(dim=1))

    monkeypatch.setattr(mnist, "build_model", small_model)
    common = ["--device", "cuda", "--data-dir", str(tiny_mnist), "--limit", "40",
              "--batch-size", "32", "--lr", "0.1", "--no-progress", "--seed", "3"]
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    m_full = mnist.main(common + ["--epochs", "2", "--save", str(full)])
    mnist.main(common + ["--epochs", "1", "--save", str(part)])
    m_resumed = mnist.main(common + ["--epochs", "2", "--resume", str(part), "--save", str(part)])
    a, b = nn.load(full), nn.load(part)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["model"]:
        assert isinstance(a["model"][key], np.ndarray)
        np.testing.assert_array_equal(a["model"][key], b["model"][key], err_msg=key)
    for i in a["optimizer"]["state"]:
        np.testing.assert_array_equal(a["optimizer"]["state"][i]["momentum_buffer"],
                                      b["optimizer"]["state"][i]["momentum_buffer"])
    assert [e["train_loss"] for e in m_full] == [e["train_loss"] for e in m_resumed]
    assert [e["test_accuracy"] for e in m_full] == [e["test_accuracy"] for e in m_resumed]
    assert all(np.isfinite(e["train_loss"]) and 0 <= e["test_accuracy"] <= 100 for e in m_full)
    # the same run on the CPU: the same metrics within float tolerance
    cpu = mnist.main([c for c in common if c not in ("--device", "cuda")] + ["--epochs", "1"])
    assert cpu[0]["train_loss"] == pytest.approx(m_full[0]["train_loss"], rel=1e-4)
    assert "resumed from" in capsys.readouterr().out


@pytest.mark.skipif(SIM, reason="the full network takes minutes per step in the simulator")
def test_mnist_example_trains_on_device(tiny_mnist, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--device", "cuda", "--limit", "64", "--epochs", "1",
         "--batch-size", "32", "--data-dir", str(tiny_mnist), "--no-progress",
         "--save", str(ckpt)],
        capture_output=True, text=True, timeout=900, env=_example_env(tmp_path, SIM))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch 1/1" in proc.stdout and "test_accuracy" in proc.stdout
    state = nn.load(ckpt)
    assert state["epoch"] == 1
    assert all(isinstance(v, np.ndarray) for v in state["model"].values())
    assert all(np.isfinite(v).all() for v in state["model"].values())
    assert all(isinstance(s["momentum_buffer"], np.ndarray)
               for s in state["optimizer"]["state"].values())
    print(f"mnist --device cuda smoke run: {time.perf_counter() - t0:.1f} s")


@pytest.mark.skipif(not SIM, reason="a GPU is present")
def test_mnist_example_without_gpu_is_a_clear_error(tiny_mnist, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--device", "cuda", "--data-dir", str(tiny_mnist),
         "--no-progress"],
        capture_output=True, text=True, timeout=300, env=_example_env(tmp_path, False))
    assert proc.returncode == 1
    assert "usable CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
