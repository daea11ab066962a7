"""ConvSpec: one normalised description of an N-d convolution.

Everything below the public wrappers works on this description and on 5-D
arrays ``(N, C, D, H, W)``: 1-D and 2-D problems are lifted to 3-D by leading
singleton spatial axes, so one kernel serves every rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class ConvSpec:
    """A validated convolution problem (shapes are per spatial axis, length ``nd``)."""

    nd: int                      # spatial rank: 1, 2 or 3
    N: int
    C_in: int
    in_size: tuple               # spatial input size, e.g. (H, W)
    C_out: int
    kernel: tuple                # spatial kernel size, e.g. (kH, kW)
    stride: tuple
    padding: tuple               # ((before, after), ...) per spatial axis
    dilation: tuple
    groups: int
    padding_mode: str            # zeros | reflect | replicate | circular
    dtype: np.dtype              # compute dtype: float32 or float64
    out_dtype: np.dtype          # returned dtype
    batched: bool = True

    # -- derived sizes (cached: the spec is frozen, the layers ask every step) ----
    @cached_property
    def padded_size(self) -> tuple:
        return tuple(n + b + a for n, (b, a) in zip(self.in_size, self.padding))

    @cached_property
    def effective_kernel(self) -> tuple:
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation))

    @cached_property
    def out_size(self) -> tuple:
        return out_size(self.padded_size, self.kernel, self.stride, self.dilation)

    @cached_property
    def out_shape(self) -> tuple:
        shape = (self.C_out,) + self.out_size
        return (self.N,) + shape if self.batched else shape

    @cached_property
    def flops(self) -> int:
        """Multiply-adds x 2 of the direct definition."""
        return (2 * self.N * self.C_out * _prod(self.out_size)
                * (self.C_in // self.groups) * _prod(self.kernel))

    # -- the 3-D lift used by every kernel --------------------------------
    def lift(self, t, fill=1):
        """Prefix a per-axis tuple with ``fill`` up to 3 axes."""
        return (fill,) * (3 - self.nd) + tuple(t)

    @cached_property
    def stride3(self):
        return self.lift(self.stride)

    @cached_property
    def dilation3(self):
        return self.lift(self.dilation)

    @cached_property
    def padding3(self):
        return self.lift(self.padding, (0, 0))

    def key(self) -> tuple:
        """Hashable identity of the problem (for autotune caches)."""
        return self._key

    @cached_property
    def _key(self) -> tuple:
        return (self.nd, self.N, self.C_in, self.in_size, self.C_out, self.kernel,
                self.stride, self.padding, self.dilation, self.groups,
                self.padding_mode, self.dtype.name)


def out_size(padded, kernel, stride, dilation) -> tuple:
    """Output size per axis of a 'valid' correlation over an already padded input: the one
    output-size formula of the package (ConvSpec, the engines and the Dask halos use it)."""
    return tuple((p - (k - 1) * d - 1) // s + 1
                 for p, k, s, d in zip(padded, kernel, stride, dilation))


def _prod(t) -> int:
    r = 1
    for v in t:
        r *= int(v)
    return r


def lift5(a: np.ndarray, nd: int) -> np.ndarray:
    """View a batched (N, C, *spatial) array as 5-D (N, C, D, H, W)."""
    return a.reshape(a.shape[:2] + (1,) * (3 - nd) + a.shape[2:])
