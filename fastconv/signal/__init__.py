"""SciPy-compatible convolution: drop-in replacements for ``scipy.signal``'s
``convolve``, ``correlate``, ``fftconvolve``, ``oaconvolve``, ``convolve2d``,
``correlate2d`` and ``choose_conv_method``, running on fastconv's kernels.

Same arguments, modes (``'full'``, ``'same'``, ``'valid'``), boundaries, result shapes,
result dtypes and errors as SciPy. Differences, all additions:

* ``method`` also accepts ``'oa'`` (overlap-add: the FFT method on cache-sized tiles),
  and :func:`choose_conv_method` may return it.
* ``'auto'`` uses fastconv's cost model (fitted on fastconv's kernels), also in
  :func:`convolve2d` / :func:`correlate2d` for floating-point inputs: large kernels run
  through FFTs there too (integers always take the exact direct method).
* bool and float16 inputs work in every rank (SciPy's N-d direct method rejects them).
* Dask: given a ``dask.array.Array`` (either input), every function returns a lazy
  ``dask.array.Array`` whose computed value, shape and dtype equal the in-memory call's.
  One input is the *data*: it stays lazy, may be chunked along any axes, and each output
  chunk is the in-memory 'valid' call on its data chunk padded with the halo the kernel
  needs (the boundary extension included). The other input is the *kernel*: a dask
  kernel is computed while the graph is built. Which is which:

  - ``'valid'``: the larger input is the data (the in-memory swap).
  - ``'full'``: the larger input by size is the data (with equal sizes: in1, unless only
    in2 is a dask array); the result has as many chunks per axis as the data (fewer
    where a chunk would be shorter than the kernel's halo).
  - ``'same'``: in1 is the data, unless in2 is a dask array larger than in1: then in2
    is the data (only its part under the in1-shaped output is read) and in1 the kernel.
  - :func:`convolve2d` / :func:`correlate2d` with ``boundary`` 'wrap'/'symm' or a
    non-zero ``fillvalue`` in 'full'/'same' mode: the extension is in1's, so in1 is
    always the data and a dask in2 is computed.

  A numpy data input is wrapped by ``dask.array.from_array`` (its default chunks). The
  one difference in value: with ``method`` 'fft' or 'oa' (:func:`fftconvolve`,
  :func:`oaconvolve`, :func:`convolve` / :func:`correlate` with those methods) a NaN or
  inf input spreads over the whole in-memory result (the transforms mix every sample)
  but in the dask result only over the output blocks whose computation reads it; finite
  inputs match. It runs unchanged on ``dask.distributed``. Unknown chunk sizes raise
  ``ValueError`` (call ``x.compute_chunk_sizes()``).

How it runs: every call is a padded 'valid' cross-correlation (see
``fastconv/signal/_core.py``): the direct method on ``fastconv.cpu.engine.forward``, the
FFT and overlap-add methods on ``scipy.fft``; the kernels release the GIL, so threads
(and Dask) run calls concurrently. The public functions here route Dask arrays to
:mod:`fastconv.signal._dask` and everything else to :mod:`fastconv.signal._memory`.

>>> import numpy as np
>>> from fastconv import signal
>>> signal.convolve([1, 2, 3], [0, 1, 0.5])
array([0. , 1. , 2.5, 4. , 1.5])
>>> import dask.array as da
>>> y = signal.convolve2d(da.ones((6, 6), chunks=3), np.ones((3, 3)), mode='same')
>>> type(y).__name__, y.chunks, y.compute()[0, :3].tolist()
('Array', ((3, 3), (3, 3)), [4.0, 6.0, 6.0])
"""
from __future__ import annotations

import numpy as np

from .._arrays import is_dask_array as is_dask
from . import _dask, _memory
from ._checks import check_mode, swap_needed

__all__ = ["convolve", "correlate", "fftconvolve", "oaconvolve", "convolve2d",
           "correlate2d", "choose_conv_method"]


# --- convolve / correlate -------------------------------------------------------------
def convolve(in1, in2, mode="full", method="auto"):
    """Convolve two N-dimensional arrays (drop-in for ``scipy.signal.convolve``).

    Parameters
    ----------
    in1 : array_like or dask.array.Array
        First input, shape ``(n_1, ..., n_d)``. A ``dask.array.Array`` gives a lazy
        Dask result (see the module docstring).
    in2 : array_like or dask.array.Array
        Second input, with the same number of dimensions as `in1`.
    mode : {'full', 'valid', 'same'}, optional
        Output size per axis: ``'full'`` ``n + m - 1`` (default); ``'valid'``
        ``max(n, m) - min(n, m) + 1``, only outputs that do not depend on zero padding
        (one input must be at least as large as the other in every dimension; the
        inputs are swapped when `in2` is the larger); ``'same'`` ``n``, centred with
        respect to the full output.
    method : {'auto', 'direct', 'fft', 'oa'}, optional
        ``'direct'``: the definition (exact for integers; float and complex kernels of
        one row, at least 81 taps, along outputs of at least ~3000 (float64) or ~6000
        (float32) samples by the 2-parallel fast FIR algorithm, 3/4 of the
        multiply-adds, at every precision level but ``"highest"``, see
        ``fastconv.set_precision``: its odd outputs' error is relative to their
        neighbours' terms too; NaN and inf sit where the definition puts them, but
        outputs whose sums overflow in the definition's order may come out finite);
        ``'fft'``: Fourier transforms;
        ``'oa'``: Fourier transforms on overlapping tiles (overlap-add);
        ``'auto'`` (default): :func:`choose_conv_method`.

    Returns
    -------
    ndarray
        Dtype ``numpy.result_type(in1, in2)`` whatever the method (integer results of
        the FFT methods are rounded).

    Warns
    -----
    RuntimeWarning
        When ``method='fft'``/``'oa'`` produces NaN or inf (use ``'direct'``); with
        ``'auto'`` such a result is recomputed with the direct method instead.

    See Also
    --------
    correlate, fftconvolve, oaconvolve, choose_conv_method

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import signal
    >>> signal.convolve([3, 4, 5, 6, 5, 4], [1, 2, 3])
    array([ 3, 10, 22, 28, 32, 32, 23, 12])
    >>> signal.convolve(np.ones((3, 3)), np.ones((2, 2)), mode='valid')
    array([[4., 4.],
           [4., 4.]])
    """
    if is_dask(in1) or is_dask(in2):
        return _dask.signal_nd("convolve", in1, in2, mode, method)
    return _memory.convolve_nd("convolve", in1, in2, mode, method, corr=False)


def correlate(in1, in2, mode="full", method="auto"):
    """Cross-correlate two N-dimensional arrays (drop-in for ``scipy.signal.correlate``).

    ``z[k] = sum_l in1[l] * conj(in2[l - k])``: the convolution of `in1` with `in2`
    reversed and conjugated.

    Parameters
    ----------
    in1, in2 : array_like or dask.array.Array
        As for :func:`convolve` (either may be a Dask array).
    mode : {'full', 'valid', 'same'}, optional
        Output size per axis: ``'full'`` ``n + m - 1`` (default); ``'valid'``
        ``max(n, m) - min(n, m) + 1``; ``'same'`` ``n``, centred with respect to the
        full output (for even kernel lengths this differs by one sample from
        :func:`correlate2d`, as in SciPy).
    method : {'auto', 'direct', 'fft', 'oa'}, optional
        As for :func:`convolve`.

    Returns
    -------
    ndarray
        Dtype ``numpy.result_type(in1, in2)``.

    See Also
    --------
    convolve, correlate2d, choose_conv_method

    Examples
    --------
    >>> from fastconv import signal
    >>> signal.correlate([1, 2, 3], [0, 1, 0.5])
    array([0.5, 2. , 3.5, 3. , 0. ])
    >>> signal.correlate([1j, 2], [1j], mode='same')
    array([1.+0.j, 0.-2.j])
    """
    if is_dask(in1) or is_dask(in2):
        return _dask.signal_nd("correlate", in1, in2, mode, method)
    return _memory.convolve_nd("correlate", in1, in2, mode, method, corr=True)


# --- fftconvolve / oaconvolve ---------------------------------------------------------
def fftconvolve(in1, in2, mode="full", axes=None):
    """Convolve two N-dimensional arrays using FFTs (drop-in for
    ``scipy.signal.fftconvolve``).

    Parameters
    ----------
    in1, in2 : array_like or dask.array.Array
        Inputs with the same number of dimensions; either may be a ``dask.array.Array``,
        which gives a lazy Dask result (see the module docstring).
    mode : {'full', 'valid', 'same'}, optional
        Output size along the convolved axes: ``'full'`` ``n + m - 1`` (default),
        ``'valid'`` ``max(n, m) - min(n, m) + 1``, ``'same'`` ``n`` (centred).
    axes : int or sequence of int, optional
        Axes to convolve over (default: all). Along the other axes the inputs must have
        equal lengths or length 1, and are multiplied with broadcasting.

    Returns
    -------
    ndarray
        Floating point (integers become float64, float16 becomes float32), or complex.

    See Also
    --------
    convolve, oaconvolve

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import signal
    >>> np.round(signal.fftconvolve([1, 2, 3], [1, 1]), 12)
    array([1., 3., 5., 3.])
    >>> x = np.arange(6.).reshape(2, 3)
    >>> signal.fftconvolve(x, [[1., -1.]], axes=1).round(12) + 0.0
    array([[ 0.,  1.,  1., -2.],
           [ 3.,  1.,  1., -5.]])
    """
    if is_dask(in1) or is_dask(in2):
        return _dask.signal_freq("fftconvolve", in1, in2, mode, axes)
    return _memory.freq_convolve(in1, in2, mode, axes, "fft")


def oaconvolve(in1, in2, mode="full", axes=None):
    """Convolve two N-dimensional arrays with the overlap-add method (drop-in for
    ``scipy.signal.oaconvolve``).

    The larger input is cut into overlapping tiles, each convolved with FFTs of a small,
    cache-friendly length; fastest when one input is much larger than the other. Falls
    back to one tile (:func:`fftconvolve`) when tiling does not pay.

    Parameters
    ----------
    in1, in2, mode, axes :
        As for :func:`fftconvolve` (Dask arrays give a lazy Dask result).

    Returns
    -------
    ndarray
        Same dtype rules as :func:`fftconvolve`.

    See Also
    --------
    fftconvolve, convolve

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import signal
    >>> x = np.ones(10000)
    >>> y = signal.oaconvolve(x, np.ones(5) / 5, mode='same')
    >>> y.shape, round(float(y[5000]), 12), round(float(y[0]), 12)
    ((10000,), 1.0, 0.6)
    """
    if is_dask(in1) or is_dask(in2):
        return _dask.signal_freq("oaconvolve", in1, in2, mode, axes)
    return _memory.freq_convolve(in1, in2, mode, axes, "oa")


# --- convolve2d / correlate2d ---------------------------------------------------------
def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Convolve two 2-D arrays (drop-in for ``scipy.signal.convolve2d``).

    Parameters
    ----------
    in1 : array_like or dask.array.Array, shape (H, W)
        First input. A ``dask.array.Array`` gives a lazy Dask result (see the module
        docstring).
    in2 : array_like or dask.array.Array, shape (kH, kW)
        Second input.
    mode : {'full', 'valid', 'same'}, optional
        Output shape: ``'full'`` ``(H + kH - 1, W + kW - 1)`` (default); ``'valid'``
        ``(H - kH + 1, W - kW + 1)`` (inputs swapped when `in2` is the larger);
        ``'same'`` ``(H, W)``, centred with respect to the full output.
    boundary : {'fill', 'wrap', 'symm'}, optional
        How `in1` is extended: ``'fill'`` with `fillvalue` (default), ``'wrap'``
        periodically (alias ``'circular'``), ``'symm'`` mirrored with the edge sample
        repeated (alias ``'symmetric'``).
    fillvalue : scalar, optional
        Value of the ``'fill'`` extension, converted to the output dtype. Default 0.

    Returns
    -------
    ndarray
        Dtype ``numpy.result_type(in1, in2)``; integers are exact.

    See Also
    --------
    correlate2d, convolve

    Examples
    --------
    >>> from fastconv import signal
    >>> signal.convolve2d([[1, 2], [3, 4]], [[1, 1]])
    array([[1, 3, 2],
           [3, 7, 4]])
    >>> signal.convolve2d([[1, 2], [3, 4]], [[1, 1]], mode='same', boundary='wrap')
    array([[3, 3],
           [7, 7]])
    """
    if is_dask(in1) or is_dask(in2):
        return _dask.signal_2d("convolve2d", in1, in2, mode, boundary, fillvalue)
    return _memory.convolve_2d("convolve2d", in1, in2, mode, boundary, fillvalue, corr=False)


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Cross-correlate two 2-D arrays (drop-in for ``scipy.signal.correlate2d``).

    Parameters
    ----------
    in1, in2 : array_like or dask.array.Array, shapes (H, W) and (kH, kW)
        As for :func:`convolve2d`; `in2` is conjugated.
    mode : {'full', 'valid', 'same'}, optional
        Output shape as for :func:`convolve2d`. In ``'same'`` mode the output is
        centred with a one-sample offset from :func:`correlate` for even kernel lengths,
        as in SciPy.
    boundary : {'fill', 'wrap', 'symm'}, optional
        As for :func:`convolve2d`.
    fillvalue : scalar, optional
        As for :func:`convolve2d`.

    Returns
    -------
    ndarray
        Dtype ``numpy.result_type(in1, in2)``. As SciPy, when 'valid' mode swaps the
        inputs the result is the swapped correlation reversed (for complex inputs: the
        conjugate of :func:`correlate`'s result).

    See Also
    --------
    convolve2d, correlate

    Examples
    --------
    >>> from fastconv import signal
    >>> signal.correlate2d([[1, 2, 3], [4, 5, 6]], [[1, -1]], mode='valid')
    array([[-1, -1],
           [-1, -1]])
    """
    if is_dask(in1) or is_dask(in2):
        return _dask.signal_2d("correlate2d", in1, in2, mode, boundary, fillvalue)
    return _memory.convolve_2d("correlate2d", in1, in2, mode, boundary, fillvalue, corr=True)


# --- choosing the method --------------------------------------------------------------
def choose_conv_method(in1, in2, mode="full", measure=False):
    """Find the fastest method for :func:`convolve` / :func:`correlate` (drop-in for
    ``scipy.signal.choose_conv_method``).

    Parameters
    ----------
    in1, in2 : array_like or dask.array.Array
        The inputs of the convolution. Dask arrays are not computed: the choice reads
        their shapes and dtypes (and, for integers, a max-magnitude reduction); with
        ``measure=True`` they are computed, since timing needs real calls.
    mode : {'full', 'valid', 'same'}, optional
        As for :func:`convolve`.
    measure : bool, optional
        If True, time every method on these inputs and return the fastest together
        with the timings; if False (default), predict it with fastconv's cost model.

    Returns
    -------
    method : str
        ``'direct'``, ``'fft'`` or ``'oa'`` (SciPy's never returns ``'oa'``; fastconv's
        :func:`convolve` accepts all three).
    times : dict, optional
        Seconds per method (keys ``'direct'``, ``'fft'``, ``'oa'``); only with
        ``measure=True``.

    Notes
    -----
    As in SciPy, integer inputs whose products could exceed float64's exact integer
    range (``2**52``), and bool inputs, always use ``'direct'``, as do problems of fewer
    than ``2**17`` multiply-adds (microseconds either way). Otherwise the estimate is
    ``overhead + sum(constant * count)`` per method, with counts from the problem's
    shape (multiply-adds; FFT ``n log2 n`` work; bytes copied) and constants fitted on
    fastconv's kernels (``fastconv/signal/_cost.py``, refit with
    ``python bench/signal_report.py --fit``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import signal
    >>> signal.choose_conv_method(np.ones(10), np.ones(3))
    'direct'
    >>> signal.choose_conv_method(np.ones((512, 512)), np.ones((63, 63))) in ('fft', 'oa')
    True
    >>> method, times = signal.choose_conv_method(np.ones(50), np.ones(5), measure=True)
    >>> sorted(times)
    ['direct', 'fft', 'oa']
    """
    if is_dask(in1) or is_dask(in2):
        # shapes and dtypes decide; integer inputs also need their largest magnitude (a
        # dask reduction); measure=True times real calls, so it computes the inputs
        a, b = _dask.operands_for_choice(in1, in2, measure)
    else:
        a, b = np.asarray(in1), np.asarray(in2)
    if measure:
        times = {m: _memory.timeit_fast(lambda m=m: convolve(a, b, mode=mode, method=m))
                 for m in ("fft", "direct", "oa")}
        return min(times, key=times.get), times
    check_mode(mode)
    if a.ndim != b.ndim or a.ndim == 0 or a.size == 0 or b.size == 0:
        return "direct"
    if a.dtype.kind not in "biufc" or b.dtype.kind not in "biufc":
        return "direct"
    if swap_needed(mode, a.shape, b.shape) or (mode == "full" and b.size > a.size):
        a, b = b, a
    return _memory.choose(a, b, mode)


