"""Shared test registry: the algorithms, tolerances, oracles and hypothesis strategies."""
import gzip
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import naive  # noqa: E402

import fastconv as fc  # noqa: E402
from fastconv import _validate, dispatch  # noqa: E402

#: every CPU algorithm of the registry that runs every shape, plus the dispatcher (the
#: benchmarks read the same registry: nothing is benchmarked that is not tested)
CPU_ALGORITHMS = tuple(n for n, a in dispatch.REGISTRY.items()
                       if "cpu" in a.devices and a.supports is dispatch._any_shape)
#: CPU algorithms limited to some shapes (Winograd: 3x3, stride 1, dilation 1), tested on
#: those in tests/cpu/test_winograd.py and tests/test_precision.py
SHAPED_ALGORITHMS = tuple(n for n, a in dispatch.REGISTRY.items()
                          if "cpu" in a.devices and a.supports is not dispatch._any_shape)
ALGORITHMS = CPU_ALGORITHMS + ("auto",)
PADDING_MODES = _validate.PADDING_MODES


def cpu_candidates(x_shape, w_shape, dtype="float32", **kwargs):
    """The CPU algorithms that can run this convolution: every general one, and the
    shape-limited ones whose constraints it meets (as dispatch.candidates)."""
    from fastconv._arrays import proxy
    nd = len(w_shape) - 2
    kw = dict(stride=1, padding=0, dilation=1, groups=1)
    kw.update({k: v for k, v in kwargs.items() if k in kw})
    spec = _validate.conv_spec("test", nd, proxy(x_shape, np.dtype(dtype)),
                               proxy(w_shape, np.dtype(dtype)), None, kw["stride"],
                               kw["padding"], kw["dilation"], kw["groups"], "zeros")[0]
    return tuple(a.name for a in dispatch.candidates(spec, "cpu"))
CONV = {1: fc.conv1d, 2: fc.conv2d, 3: fc.conv3d}
#: relative tolerance per dtype, applied to the magnitude of the expected result: the
#: largest documented error of the registry's algorithms (float16 results are rounded)
RTOL = {np.dtype(np.float16): 2e-2,
        **{np.dtype(dt): max(a.rtol["cpu"][dt] for a in dispatch.REGISTRY.values())
           for dt in ("float32", "float64")}}

#: hypothesis settings for property tests: few, tiny examples (numba compiles once per dtype).
#: Random (not derandomized) so that each algorithm sees different problems; no example
#: database is written into the shared tree. A failure prints its falsifying example.
PROPERTY = settings(max_examples=25, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def assert_close(got, want, dtype=None, scale=None):
    """got == want within the dtype's relative tolerance, relative to the magnitude of want."""
    got = np.asarray(got)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    dtype = np.dtype(dtype if dtype is not None else got.dtype)
    rtol = RTOL[dtype]
    if scale is None:
        scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    err = np.abs(got.astype(np.float64) - want)
    worst = float(err.max()) if err.size else 0.0
    assert worst <= rtol * scale, (
        f"max |got - want| = {worst:.3g} > {rtol:g} * {scale:.3g} (dtype {dtype}); "
        f"at {np.unravel_index(int(err.argmax()), err.shape)}: got "
        f"{got.ravel()[int(err.argmax())]!r}, want {want.ravel()[int(err.argmax())]!r}")


# --- MNIST-format files ------------------------------------------------------------------
def idx_bytes(arr):
    """``arr`` as an IDX file of unsigned bytes (the MNIST format), uncompressed."""
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.tobytes()


def write_bar_digits(root, sizes):
    """A tiny learnable MNIST in ``root`` (gzip IDX files): ``sizes`` maps "train"/"t10k"
    to a number of 'digits', each label drawn as a bright bar at its own height."""
    rng = np.random.default_rng(0)
    for split, n in sizes.items():
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, y in enumerate(labels):
            images[i, 2 + 2 * y:4 + 2 * y, 4:24] = 255
        (root / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return root


# --- configurations ---------------------------------------------------------------------
MAX_SPATIAL = {1: 9, 2: 8, 3: 5}
MAX_KERNEL = {1: 4, 2: 3, 3: 3}


def padding_strategy(nd, same=True):
    forms = [st.integers(0, 2),
             st.tuples(*[st.integers(0, 2)] * nd),
             st.tuples(*[st.tuples(st.integers(0, 3), st.integers(0, 3))] * nd),
             st.just("valid")]
    if same:
        forms.append(st.just("same"))
    return st.one_of(*forms)


def int_or_tuple(nd, lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * nd))


def valid_config(cfg):
    """Whether a drawn configuration is a legal convolution (else hypothesis.assume fails)."""
    nd = cfg["nd"]
    in_size = cfg["x_shape"][-nd:]
    kernel = cfg["w_shape"][2:]
    stride = naive.as_tuple(cfg["stride"], nd)
    dilation = naive.as_tuple(cfg["dilation"], nd)
    pads = naive.pad_pairs(cfg["padding"], nd, in_size, kernel, stride, dilation)
    for n, k, d, (b, a) in zip(in_size, kernel, dilation, pads):
        if n + b + a < (k - 1) * d + 1:
            return False
        if cfg["padding_mode"] == "reflect" and max(b, a) >= n:
            return False
        if cfg["padding_mode"] == "circular" and max(b, a) > n:
            return False
    return True


@st.composite
def conv_configs(draw, nd, same=True, modes=PADDING_MODES, dtypes=(np.float32, np.float64),
                 max_batch=3, unbatched=True):
    """A legal convolution problem: shapes and every keyword of conv{nd}d."""
    groups = draw(st.sampled_from([1, 1, 2, 3, 4]))
    cg = draw(st.integers(1, max(1, 4 // groups)))
    og = draw(st.integers(1, max(1, 4 // groups)))
    if draw(st.booleans()):
        cg = 1                                   # depthwise-style (one input channel per group)
    kernel = tuple(draw(st.integers(1, MAX_KERNEL[nd])) for _ in range(nd))
    spatial = tuple(draw(st.integers(1, MAX_SPATIAL[nd])) for _ in range(nd))
    batched = not (unbatched and draw(st.integers(0, 4)) == 0)
    N = draw(st.integers(1, max_batch))
    x_shape = ((N,) if batched else ()) + (groups * cg,) + spatial
    cfg = dict(
        nd=nd, x_shape=x_shape, w_shape=(groups * og, cg) + kernel,
        bias=draw(st.booleans()),
        stride=draw(int_or_tuple(nd, 1, 3)),
        padding=draw(padding_strategy(nd, same)),
        dilation=draw(int_or_tuple(nd, 1, 3)),
        groups=groups,
        padding_mode=draw(st.sampled_from(modes)),
        dtype=np.dtype(draw(st.sampled_from(dtypes))),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    assume(valid_config(cfg))
    return cfg


def make_arrays(cfg):
    """Random x, w, bias (or None) for a configuration, in its dtype."""
    rng = np.random.default_rng(cfg["seed"])
    dt = cfg["dtype"]
    x = rng.uniform(-1, 1, cfg["x_shape"]).astype(dt)
    w = rng.uniform(-1, 1, cfg["w_shape"]).astype(dt)
    b = rng.uniform(-1, 1, cfg["w_shape"][0]).astype(dt) if cfg["bias"] else None
    return x, w, b


def conv_kwargs(cfg):
    return {k: cfg[k] for k in ("stride", "padding", "dilation", "groups", "padding_mode")}


def naive_conv(cfg, x, w, b):
    return naive.conv(x, w, b, **conv_kwargs(cfg))


# --- oracles ----------------------------------------------------------------------------
def scipy_conv(x, w, b=None, stride=1, pads=None, dilation=1, groups=1, padding_mode="zeros"):
    """Oracle from scipy.signal.correlate(mode='valid'): one correlation per
    (output channel, input channel) pair, summed over the input channels of the group;
    dilation by a zero-dilated kernel, stride by subsampling. x is batched."""
    from scipy.signal import correlate
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    nd = w.ndim - 2
    s, d = naive.as_tuple(stride, nd), naive.as_tuple(dilation, nd)
    pads = pads or ((0, 0),) * nd
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads), mode=naive.NP_PAD_MODE[padding_mode])
    O, Cg = w.shape[:2]
    Og = O // groups
    ke = tuple((k - 1) * di + 1 for k, di in zip(w.shape[2:], d))
    wd = np.zeros((O, Cg) + ke)
    wd[(slice(None), slice(None)) + tuple(slice(None, None, di) for di in d)] = w
    sub = tuple(slice(None, None, si) for si in s)
    rows = []
    for n in range(x.shape[0]):
        chans = []
        for o in range(O):
            g = o // Og
            acc = sum(correlate(xp[n, g * Cg + c], wd[o, c], mode="valid") for c in range(Cg))
            chans.append(acc[sub] + (0.0 if b is None else b[o]))
        rows.append(chans)
    return np.array(rows, dtype=np.float64)


def torch_conv(cfg, x, w, b):
    """PyTorch oracle (float64) through torch.nn.ConvNd, which applies padding_mode itself.
    Only for paddings torch accepts: ints/tuples, 'valid', and 'same' with stride 1."""
    torch = pytest.importorskip("torch")
    nd = cfg["nd"]
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
    O, Cg = w.shape[:2]
    m = cls(Cg * cfg["groups"], O, w.shape[2:], stride=cfg["stride"], padding=cfg["padding"],
            dilation=cfg["dilation"], groups=cfg["groups"], bias=b is not None,
            padding_mode=cfg["padding_mode"]).double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(np.asarray(w, np.float64)))
        if b is not None:
            m.bias.copy_(torch.from_numpy(np.asarray(b, np.float64)))
        return m(torch.from_numpy(np.asarray(x, np.float64))).numpy()


def torch_accepts(cfg):
    p = cfg["padding"]
    if isinstance(p, tuple) and p and isinstance(p[0], tuple):
        return False                                      # per-side pairs
    if p == "same" and any(s != 1 for s in naive.as_tuple(cfg["stride"], cfg["nd"])):
        return False                                      # torch: 'same' needs stride 1
    return True


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def plans(monkeypatch):
    """Every call of dispatch.plan: (op, device, algorithm asked, entry run, spec)."""
    calls = []
    real = dispatch.plan

    def plan(spec, op="forward", algorithm="auto", device="cpu", run=None, finite=None,
             precision=None):
        entry = real(spec, op, algorithm, device, run, finite, precision)
        calls.append((op, device, algorithm, entry.name, spec))
        return entry

    monkeypatch.setattr(dispatch, "plan", plan)
    return calls


AVX2_PRELUDE = """
import numpy as np
from llvmlite import binding
from llvmlite.binding.targets import FeatureMap
feats = binding.get_host_cpu_features()
avx2 = FeatureMap({k: (v and not k.startswith("avx512")) for k, v in feats.items()})
binding.get_host_cpu_features = lambda: avx2    # numba compiles for it too
"""


def run_on_emulated_avx2(body, cache_dir):
    """Run ``body`` (Python source, which prints "ok" at its end) in a fresh interpreter
    whose LLVM reports the host without AVX-512 (the AVX2 kernels' paths), with its own
    numba cache (compiled code is keyed by the CPU name, not by this patch) and the
    tests' modules (naive) importable; assert it succeeded."""
    import subprocess
    import textwrap

    from fastconv.cpu import _simd
    if not _simd.HOST_AVX512:       # (its cold compile costs CI a minute for nothing)
        pytest.skip("the host has no AVX-512: the suite itself runs the AVX2 paths")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join([os.path.dirname(tests), tests,
                                           os.environ.get("PYTHONPATH", "")]))
    code = AVX2_PRELUDE + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok" in out.stdout


@pytest.fixture
def lanes_costs(monkeypatch):
    """direct.minor_pays with AVX-512's lanes cost on every host (AVX2 hosts price the
    lanes forward higher and would run MNIST's conv2 on the lines): for tests of what
    happens around the lanes kernels at those shapes."""
    from fastconv.cpu import direct
    monkeypatch.setattr(direct, "MINOR_MAC_COST", 1.3)
    for f in (direct.minor_pays, direct.minor_macs):
        f.cache_clear()
    yield
    for f in (direct.minor_pays, direct.minor_macs):
        f.cache_clear()
