"""FFT convolution: real FFTs (``scipy.fft``, all cores), a per-frequency channel
contraction in a numba kernel, inverse FFT, then crop and subsample.

Correlation theorem: with F >= the padded input size, the circular correlation
``irfft(rfft(x) * conj(rfft(w)))`` equals the linear 'valid' correlation on its first
``P - K_eff + 1`` samples. Dilation uses a zero-dilated kernel, stride subsamples.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, n_tasks_target

FFT_BUDGET_BYTES = 96 << 20


def workers() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@njit(parallel=True, **JIT)
def _contract(yf, xf, wf, groups, nfc):
    # yf[n, o, f] = sum_c xf[n, g*Cg + c, f] * wf[o, c, f]   (complex; wf already conjugated)
    # Tasks: (image, output channel, chunk of frequencies) -- chunks keep both cores busy
    # when there is a single image and channel (signal processing).
    N, O, F = yf.shape
    Cg = wf.shape[1]
    Og = O // groups
    fc = (F + nfc - 1) // nfc
    for t in prange(N * O * nfc):
        k = t % nfc
        n = t // (O * nfc)
        o = (t // nfc) % O
        g = o // Og
        f0 = k * fc
        f1 = min(F, f0 + fc)
        yr = yf[n, o]
        for f in range(f0, f1):
            yr[f] = 0
        for c in range(Cg):
            xr = xf[n, g * Cg + c]
            wr = wf[o, c]
            for f in range(f0, f1):
                yr[f] += xr[f] * wr[f]


def _dilate(w, dilation):
    if all(d == 1 for d in dilation):
        return w
    ke = [(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation)]
    wd = np.zeros(w.shape[:2] + tuple(ke), dtype=w.dtype)
    wd[:, :, ::dilation[0], ::dilation[1], ::dilation[2]] = w
    return wd


def fft_fwd(xp, w, bias, stride, dilation, groups, out):
    import scipy.fft as sfft   # imported on first use: keeps `import fastconv` fast
    N, C = xp.shape[:2]
    O = w.shape[0]
    P = xp.shape[2:]
    wd = _dilate(w, dilation)
    fshape = tuple(sfft.next_fast_len(int(p), real=True) for p in P)
    # transform only the spatial axes longer than one (pocketfft is slow on length-1 axes);
    # the last of them carries the real-to-complex half spectrum
    axes = tuple(a for a in (2, 3, 4) if fshape[a - 2] > 1) or (4,)
    fshape = tuple(fshape[a - 2] for a in axes)
    nw = workers()
    wf = np.conj(sfft.rfftn(wd, s=fshape, axes=axes, workers=nw))
    Fsz = int(np.prod(wf.shape[2:]))
    wf = np.ascontiguousarray(wf).reshape(O, wd.shape[1], Fsz)
    per_image = (C + O) * Fsz * wf.itemsize * 2
    nb = max(1, min(N, FFT_BUDGET_BYTES // max(per_image, 1)))
    OD, OH, OW = out.shape[2:]
    crop = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip((OD, OH, OW), stride))
    b = bias.reshape(1, O, 1, 1, 1)
    for n0 in range(0, N, nb):
        m = min(nb, N - n0)
        xf = sfft.rfftn(xp[n0:n0 + m], s=fshape, axes=axes, workers=nw)
        fsh = xf.shape[2:]
        yf = np.empty((m, O, Fsz), dtype=xf.dtype)
        nfc = max(1, min(-(-n_tasks_target() // (m * O)), Fsz // 4096))
        _contract(yf, np.ascontiguousarray(xf).reshape(m, C, Fsz), wf, groups, nfc)
        y = sfft.irfftn(yf.reshape((m, O) + fsh), s=fshape, axes=axes, workers=nw)
        np.add(y[(slice(None), slice(None)) + crop], b, out=out[n0:n0 + m])
    return out
