"""The large kernels compile once per dtype: the layout of an operand (C-contiguous,
strided, read-only) and the number of lane chunks are not part of the types they are
compiled for (each compile of the stencil kernel took 20-30 s on a 2-core machine)."""
import numpy as np
import pytest
import scipy.signal as ss
from numba import njit

import fastconv as fc
import naive
from fastconv.cpu import minor, stencil
from fastconv.cpu._common import any_layout


def _sigs(kernel, dtype):
    return [s for s in kernel.signatures if str(s[0].dtype) == np.dtype(dtype).name]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stencil_compiles_once_for_every_layout(dtype, rng):
    """C-contiguous, strided, reversed and read-only inputs, whole and strided outputs,
    read-only and strided weights and biases, with and without an extension read in
    place: every one right (against SciPy), all on at most one more compiled kernel,
    whose arrays are typed 'A' and writable; a read-only output is refused."""
    before = set(_sigs(stencil._stencil2d, dtype))
    big = rng.standard_normal((1, 1, 24, 44)).astype(dtype)
    w = rng.standard_normal((1, 3, 5)).astype(dtype)
    ro = big[:, :, 2:22, 2:42].copy()
    ro.flags.writeable = False
    w_ro = w.copy()
    w_ro.flags.writeable = False
    bias_strided = np.repeat(rng.standard_normal(1).astype(dtype), 2)[::2]
    inputs = [big[:, :, 2:22, 2:42].copy(), big[:, :, 2:22, 2:42],
              big[:, :, 21:1:-1, 2:42], ro]
    for x in inputs:
        for pads in (None, ((1, 1), (2, 2))):
            OH, OW = (18, 36) if pads is None else (20, 40)
            frame = np.zeros((1, 1, OH + 2, OW + 3), dtype)
            for out in (np.empty((1, 1, OH, OW), dtype), frame[:, :, 1:-1, 2:-1]):
                for ww, b in ((w, None), (w_ro, bias_strided)):
                    stencil.stencil2d(out, x, ww, b, pads)
                    want = ss.correlate2d(x[0, 0].astype(np.float64), w[0].astype(np.float64),
                                          "valid" if pads is None else "same")
                    want += 0 if b is None else float(b[0])
                    np.testing.assert_allclose(
                        out[0, 0], want, rtol=0,
                        atol=100 * np.finfo(dtype).eps * np.abs(want).max())
    new = set(_sigs(stencil._stencil2d, dtype)) - before
    assert len(new) <= 1, new
    assert all(s[0].layout == s[1].layout == "A" and s[1].mutable
               for s in _sigs(stencil._stencil2d, dtype))
    out = np.empty((1, 1, 18, 36), dtype)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        stencil.stencil2d(out, inputs[0], w)


def test_any_layout_calls_the_kernel_on_the_arrays_given(rng):
    """The entry point it calls computes on the strided, read-only arrays themselves."""
    a = rng.standard_normal((6, 8))
    b = a[::2, 1::3]
    b.setflags(write=False)
    out = np.zeros((3, 3))
    any_layout(_copy_scaled, (out, b), 2.0)
    np.testing.assert_array_equal(out, 2.0 * b)
    assert all(s[0].layout == "A" for s in _copy_scaled.signatures)


@njit
def _copy_scaled(out, x, s):
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = s * x[i, j]


def test_minor_forward_compiles_once_for_any_lane_chunks(rng):
    """Batches with different counts of lane chunks per position (cpu/minor.chunks) run
    on one compiled images-in-lanes forward, each against the naive reference."""
    counts = set()
    before = set(_sigs(minor._minor_fwd, np.float64))
    for N in (3, 40, 100):
        Np = minor.lanes(N, 8)
        counts.add(minor.chunks(Np, 8, minor.rows(5)).size)       # (5 output channels)
        x = rng.standard_normal((N, 2, 7, 9))
        w = rng.standard_normal((5, 2, 3, 3))
        with pytest.MonkeyPatch.context() as mp:
            from fastconv.cpu import direct
            mp.setattr(direct, "minor_pays", lambda *a: True)
            got = fc.conv2d(x, w, padding=1, algorithm="direct")
        np.testing.assert_allclose(got, naive.conv(x, w, padding=1), rtol=1e-12, atol=1e-12)
    assert len(counts) >= 2, counts
    assert len(set(_sigs(minor._minor_fwd, np.float64)) - before) <= 1
