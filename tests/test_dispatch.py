"""choose_algorithm, algorithm="auto" and the autotune cache."""
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastconv as fc
from fastconv import _config, dispatch
from fastconv.cpu import engine as _engine
import naive
from conftest import CONV, CPU_ALGORITHMS, assert_close, cpu_candidates

SHAPES = [
    # (x_shape, weight_shape, kwargs)
    ((64, 1, 28, 28), (10, 1, 5, 5), {}),                                   # mnist.conv1
    ((64, 10, 12, 12), (20, 10, 5, 5), {}),                                 # mnist.conv2
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),                     # resnet
    ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),           # stem
    ((1, 1, 64, 64), (1, 1, 31, 31), dict(padding="same")),                 # large kernel
    ((4, 32, 16, 16), (32, 1, 3, 3), dict(padding=1, groups=32)),          # depthwise
    ((2, 8, 9, 9), (16, 8, 1, 1), {}),                                      # 1x1
    ((3, 9, 9), (4, 3, 3, 3), dict(stride=2, padding="same", dilation=2)),  # unbatched
    ((2, 4, 100), (8, 4, 7), dict(padding=((3, 2),))),                      # 1-D
    ((1, 2, 8, 8, 8), (4, 2, 3, 3, 3), dict(padding=1)),                    # 3-D
]


@pytest.mark.parametrize("x_shape,w_shape,kwargs", SHAPES)
@pytest.mark.parametrize("dtype", ["float32", np.float64])
def test_choose_algorithm(x_shape, w_shape, kwargs, dtype):
    c = fc.choose_algorithm(x_shape, w_shape, dtype=dtype, **kwargs)
    assert isinstance(c, fc.Choice)
    assert set(c.estimates) == set(cpu_candidates(x_shape, w_shape, dtype, **kwargs))
    for algo, t in c.estimates.items():
        assert isinstance(t, float) and math.isfinite(t) and t > 0, (algo, t)
    assert c.algorithm in c.estimates
    assert c.algorithm == min(c.estimates, key=c.estimates.get)
    assert isinstance(c.reason, str)
    reason = c.reason.strip()
    assert len(reason) > 20 and reason.endswith(".") and "\n" not in reason
    assert c.algorithm in reason
    assert fc.choose_algorithm(x_shape, w_shape, dtype=dtype, device="cpu", **kwargs).algorithm \
        == c.algorithm


def test_choose_algorithm_bad_input():
    with pytest.raises(ValueError, match=r"weight_shape.*\(3, 3\)"):
        fc.choose_algorithm((1, 1, 5, 5), (3, 3))
    with pytest.raises(ValueError, match=r"weight has 3 input channels per group but (input|x) has 4"):
        fc.choose_algorithm((1, 4, 5, 5), (2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"stride"):
        fc.choose_algorithm((1, 4, 5, 5), (2, 4, 3, 3), stride=0)
    with pytest.raises(ValueError, match=r"kernel"):
        fc.choose_algorithm((1, 4, 5, 5), (2, 4, 7, 3))
    with pytest.raises(ValueError, match=r"device"):
        fc.choose_algorithm((1, 4, 5, 5), (2, 4, 3, 3), device="tpu")
    with pytest.raises(TypeError, match=r"x_shape.*5\.5"):
        fc.choose_algorithm((1, 4, 5.5, 5), (2, 4, 3, 3))
    with pytest.raises(TypeError, match=r"weight_shape.*3\.0"):
        fc.choose_algorithm((1, 4, 5, 5), (2, 4, 3.0, 3))
    with pytest.raises(ValueError, match=r"x_shape.*-5"):
        fc.choose_algorithm((1, 4, -5, 5), (2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"x_shape.*\(1, 4, 5, 5, 5\)"):
        fc.choose_algorithm((1, 4, 5, 5, 5), (2, 4, 3, 3))


KERNEL_NAMES = {entry.cpu_kernels: name for name, entry in dispatch.REGISTRY.items()}


@pytest.fixture
def spy(monkeypatch):
    """Record the algorithm of every forward kernel run."""
    calls = []
    real = _engine.forward

    def forward(*args, **kwargs):
        kernels = kwargs["kernels"] if "kernels" in kwargs else args[6]
        calls.append(KERNEL_NAMES[kernels])
        return real(*args, **kwargs)

    monkeypatch.setattr(_engine, "forward", forward)
    return calls


@pytest.fixture
def fresh_dispatch(monkeypatch, tmp_path):
    """Autotune state reset, cache under tmp_path; everything restored afterwards."""
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FASTCONV_AUTOTUNE", raising=False)
    monkeypatch.setattr(dispatch, "_memory", {})
    monkeypatch.setattr(dispatch, "_loaded", set())
    monkeypatch.setattr(_config, "AUTOTUNE", False)
    return tmp_path


def _reset_memory(monkeypatch):
    monkeypatch.setattr(dispatch, "_memory", {})
    monkeypatch.setattr(dispatch, "_loaded", set())


AUTO_CASES = [
    ((2, 3, 10, 9), (4, 3, 3, 3), dict(padding=1)),
    ((1, 1, 24, 24), (1, 1, 15, 15), dict(padding="same")),
    ((3, 8, 7, 7), (8, 1, 3, 3), dict(groups=8, stride=2, padding="same", padding_mode="reflect")),
    ((2, 16, 6, 6), (16, 16, 1, 1), {}),
    ((2, 3, 30), (4, 3, 5), dict(dilation=2, padding=((4, 1),), padding_mode="circular")),
    ((1, 2, 6, 5, 7), (3, 2, 3, 2, 3), dict(stride=(1, 2, 1), padding=1)),
]


@pytest.mark.parametrize("x_shape,w_shape,kwargs", AUTO_CASES)
def test_auto_runs_the_choice_and_equals_every_algorithm(x_shape, w_shape, kwargs, rng, spy,
                                                        fresh_dispatch):
    nd = len(w_shape) - 2
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    conv_kw = {k: v for k, v in kwargs.items() if k != "padding_mode"}
    choice = fc.choose_algorithm(x_shape, w_shape, dtype=np.float64, **conv_kw)
    auto = CONV[nd](x, w, **kwargs)
    assert spy == [choice.algorithm]
    for algo in CPU_ALGORITHMS:
        assert_close(CONV[nd](x, w, **kwargs, algorithm=algo), auto)
    assert_close(auto, naive.conv(x, w, **kwargs))


def test_autotune_writes_and_reads_the_disk_cache(rng, spy, fresh_dispatch, monkeypatch):
    import numba
    path = fresh_dispatch / "autotune.json"
    x = rng.standard_normal((2, 3, 12, 12))
    w = rng.standard_normal((4, 3, 3, 3))
    want = naive.conv(x, w, padding=1)
    fc.set_autotune(True)
    assert _config.AUTOTUNE is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # no warning on the normal path
        assert_close(fc.conv2d(x, w, padding=1), want)
    assert set(spy[:-1]) == set(cpu_candidates(x.shape, w.shape, padding=1))  # every one timed
    winner = spy[-1]
    assert path.is_file()
    data = json.loads(path.read_text())
    [(machine, entries)] = data.items()
    assert numba.__version__ in machine and fc.__version__ in machine
    assert list(entries.values()) == [winner]
    # in memory: the next call runs the winner only
    spy.clear()
    fc.conv2d(x, w, padding=1)
    assert spy == [winner]
    # from disk, after a reset: force another algorithm in the file, it is the one used
    forced = next(a for a in CPU_ALGORITHMS if a != winner)
    path.write_text(json.dumps({machine: {k: forced for k in entries}}))
    _reset_memory(monkeypatch)
    spy.clear()
    assert_close(fc.conv2d(x, w, padding=1), want)
    assert spy == [forced]
    # autotune off: the cost model, and no timing
    fc.set_autotune(False)
    spy.clear()
    fc.conv2d(x, w, padding=1)
    assert spy == [fc.choose_algorithm(x.shape, w.shape, padding=1, dtype=np.float64).algorithm]


def test_autotune_cache_read_by_a_second_process(rng, fresh_dispatch):
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import fastconv as fc
        from fastconv import _config, dispatch
        from fastconv.cpu import engine as _engine
        calls = []
        real = _engine.forward
        def forward(*a, **k):
            calls.append({e.cpu_kernels: n for n, e in dispatch.REGISTRY.items()}[a[6]])
            return real(*a, **k)
        _engine.forward = forward
        x = np.arange(2 * 3 * 12 * 12, dtype=np.float64).reshape(2, 3, 12, 12) % 7
        w = np.ones((4, 3, 3, 3))
        y = fc.conv2d(x, w, padding=1)
        print(json.dumps({"autotune": _config.AUTOTUNE, "calls": calls, "sum": float(y.sum())}))
    """)
    env = dict(os.environ, FASTCONV_CACHE_DIR=str(fresh_dispatch), FASTCONV_AUTOTUNE="1")

    def run():
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr

    first, _ = run()
    assert first["autotune"] is True
    assert set(first["calls"]) == set(cpu_candidates((2, 3, 12, 12), (4, 3, 3, 3), padding=1))
    path = fresh_dispatch / "autotune.json"
    data = json.loads(path.read_text())
    [(machine, entries)] = data.items()
    forced = next(a for a in CPU_ALGORITHMS if a != first["calls"][-1])
    path.write_text(json.dumps({machine: {k: forced for k in entries}}))
    second, stderr = run()
    assert second["calls"] == [forced]                 # read from disk: nothing timed
    assert "Warning" not in stderr
    x = np.arange(2 * 3 * 12 * 12, dtype=np.float64).reshape(2, 3, 12, 12) % 7
    want = naive.conv(x, np.ones((4, 3, 3, 3)), padding=1).sum()
    assert abs(second["sum"] - want) <= 1e-9 * abs(want)
    assert abs(first["sum"] - want) <= 1e-9 * abs(want)


@pytest.mark.parametrize("content", [b"\x80\x81\xfegarbage\x00{{", b"{not json", b"[1, 2, 3]",
                                     b""])
def test_corrupt_cache_warns_and_is_ignored(content, rng, fresh_dispatch):
    path = fresh_dispatch / "autotune.json"
    path.write_bytes(content)
    x = rng.standard_normal((1, 2, 8, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    fc.set_autotune(True)
    with pytest.warns(RuntimeWarning, match=re.escape(str(path))):
        y = fc.conv2d(x, w)
    assert_close(y, naive.conv(x, w))


def test_corrupt_entries_warn_or_are_ignored(rng, spy, fresh_dispatch, monkeypatch):
    path = fresh_dispatch / "autotune.json"
    x = rng.standard_normal((1, 2, 8, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    fc.set_autotune(True)
    fc.conv2d(x, w)
    [machine] = json.loads(path.read_text())
    # our machine's entry is not a mapping: a warning naming the file, then retuned
    path.write_text(json.dumps({machine: [1, 2]}))
    _reset_memory(monkeypatch)
    spy.clear()
    with pytest.warns(RuntimeWarning, match=re.escape(str(path))):
        assert_close(fc.conv2d(x, w), naive.conv(x, w))
    assert set(spy[:-1]) == set(cpu_candidates(x.shape, w.shape))
    # an unknown algorithm name in the cache is never run
    data = json.loads(path.read_text())
    path.write_text(json.dumps({machine: {k: "warp-drive" for k in data[machine]}}))
    _reset_memory(monkeypatch)
    spy.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(fc.conv2d(x, w), naive.conv(x, w))
    assert "warp-drive" not in spy and spy


def test_unwritable_cache_dir_warns(rng, fresh_dispatch, monkeypatch):
    blocker = fresh_dispatch / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(blocker / "cache"))
    x = rng.standard_normal((1, 2, 8, 8))
    w = rng.standard_normal((3, 2, 3, 3))
    fc.set_autotune(True)
    with pytest.warns(RuntimeWarning, match=r"autotune") as rec:
        y = fc.conv2d(x, w)
    assert any(str(blocker) in str(r.message) for r in rec)
    assert_close(y, naive.conv(x, w))


def test_readonly_cache_dir_warns(rng, fresh_dispatch, monkeypatch):
    ro = fresh_dispatch / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running with privileges that ignore directory permissions")
        monkeypatch.setenv("FASTCONV_CACHE_DIR", str(ro))
        x = rng.standard_normal((1, 2, 8, 8))
        w = rng.standard_normal((3, 2, 3, 3))
        fc.set_autotune(True)
        with pytest.warns(RuntimeWarning, match=re.escape(str(ro))):
            y = fc.conv2d(x, w)
        assert_close(y, naive.conv(x, w))
    finally:
        os.chmod(ro, 0o700)


def test_set_autotune_off_writes_nothing(rng, fresh_dispatch):
    fc.set_autotune(False)
    fc.conv2d(rng.standard_normal((1, 2, 8, 8)), rng.standard_normal((3, 2, 3, 3)))
    assert not (fresh_dispatch / "autotune.json").exists()


def test_autotune_times_a_layer_as_the_public_call_runs(fresh_dispatch, monkeypatch, lanes_costs):
    # nn.Conv2d keeps the lanes kernel's transposed input for its weight gradient
    # (cpu/_common.reuse); autotune's timing runs must not find it (the public calls that
    # share the cache entry pay for the transpose), and the layer still saves it
    from fastconv import nn
    from fastconv.cpu import _common, minor
    seen = []
    real = minor.to_minor

    def spy(xp):
        seen.append(getattr(_common._tls, "store", None))
        return real(xp)

    monkeypatch.setattr(minor, "to_minor", spy)
    fc.set_autotune(True)
    conv = nn.Conv2d(10, 20, 5, rng=0)
    x = np.random.default_rng(0).standard_normal((64, 10, 12, 12)).astype(np.float32)
    conv(x)
    timed = [s for s in seen if s is not None and s[1] is False and not s[0]]
    assert timed, "autotune timed the lanes kernel outside a cleared scope"
    assert all(s is None or s[0] == {} or s[0] is conv._ctx["saved"] for s in seen)
    assert "minor_x" in conv._ctx["saved"]
    conv.backward(np.ones((64, 20, 8, 8), np.float32), input_grad=False)
    fc.set_autotune(False)
