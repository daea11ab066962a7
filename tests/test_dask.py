"""Dask arrays in, lazy Dask arrays out, equal to the in-memory call (SPEC section 7)."""
import numpy as np
import pytest

import fastconv as fc

da = pytest.importorskip("dask.array")

CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(stride=(1, 3), padding="same", dilation=2, groups=2, padding_mode="reflect"),
    dict(padding=((2, 1), (0, 3)), padding_mode="circular", algorithm="fft"),
    dict(padding=2, padding_mode="replicate", algorithm="im2col"),
]


@pytest.mark.parametrize("kw", CASES)
def test_conv2d_dask_matches_numpy(kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 23, 19))
    w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 4))
    b = rng.standard_normal(6)
    dx = da.from_array(x, chunks=(2, 4, 8, 7))         # batch and spatial chunks
    y = fc.conv2d(dx, w, b, **kw)
    assert isinstance(y, da.Array)
    expected = fc.conv2d(x, w, b, **kw)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    assert len(y.chunks[0]) == 3                          # batch chunks map one to one
    np.testing.assert_allclose(y.compute(), expected, rtol=1e-12, atol=1e-12)


def test_conv1d_conv3d_and_unbatched():
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((3, 2, 40))
    w1 = rng.standard_normal((4, 2, 5))
    np.testing.assert_allclose(fc.conv1d(da.from_array(x1, chunks=(1, 2, 9)), w1, stride=3).compute(),
                               fc.conv1d(x1, w1, stride=3), atol=1e-12)
    x3 = rng.standard_normal((6, 7, 9, 9))                # unbatched conv3d: (C, D, H, W)
    w3 = rng.standard_normal((3, 6, 2, 3, 2))
    y3 = fc.conv3d(da.from_array(x3, chunks=(6, 4, 5, 5)), w3, padding=1)
    np.testing.assert_allclose(y3.compute(), fc.conv3d(x3, w3, padding=1), atol=1e-12)


def test_dask_is_lazy_and_validates_eagerly():
    x = da.zeros((2, 3, 8, 8), chunks=(1, 3, 8, 8))
    with pytest.raises(ValueError, match="weight has 2 input channels per group"):
        fc.conv2d(x, np.zeros((4, 2, 3, 3)))
    y = fc.conv2d(x, np.ones((4, 3, 3, 3), np.float32))
    assert y.dtype == np.float64 and y.shape == (2, 4, 6, 6)
