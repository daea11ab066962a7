"""Precision levels (issue 12): fastconv.set_precision / get_precision, FASTCONV_PRECISION,
the per-call precision= keyword, and what each level lets ``auto`` choose."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv import _config, _validate, dispatch
import naive
from conftest import cpu_candidates

LEVELS = _validate.PRECISIONS


@pytest.fixture(autouse=True)
def _restore_level():
    old = _config.PRECISION
    yield
    _config.PRECISION = old


SHAPES = [  # x_shape, w_shape, kwargs: 3x3 layers where winograd/fft compete, and others
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ((4, 128, 56, 56), (128, 128, 3, 3), dict(padding=1)),
    ((1, 256, 28, 28), (256, 256, 3, 3), dict(padding=1)),
    ((2, 512, 14, 14), (512, 512, 3, 3), dict(padding=1)),
    ((2, 3, 64, 64), (8, 3, 3, 3), {}),
    ((1, 1, 64, 64), (1, 1, 31, 31), dict(padding="same")),
    ((1, 4, 128, 128), (4, 4, 15, 15), dict(padding=7)),
    ((64, 10, 12, 12), (20, 10, 5, 5), {}),
    ((4, 32, 16, 16), (32, 1, 3, 3), dict(padding=1, groups=32)),
    ((1, 2, 8, 8, 8), (4, 2, 1, 3, 3), dict(padding=1)),
]


def test_default_set_and_get():
    assert fc.get_precision() == "high"
    for level in LEVELS:
        fc.set_precision(level)
        assert fc.get_precision() == level


@pytest.mark.parametrize("bad", ["HIGH", "low", "", None, 1, "highest "])
def test_bad_values_raise_naming_the_parameter(bad):
    x, w = np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3))
    calls = [lambda: fc.conv2d(x, w, precision=bad),
             lambda: fc.conv1d(x[:, :, 0], w[:, :, 0], precision=bad),
             lambda: fc.conv3d(x[:, :, None], w[:, :, None], precision=bad),
             lambda: fc.conv_transpose2d(x, w, precision=bad),
             lambda: fc.grad.conv2d_input(x.shape, w, np.ones((1, 2, 4, 4)), precision=bad),
             lambda: fc.grad.conv2d_weight(x, w.shape, np.ones((1, 2, 4, 4)), precision=bad),
             lambda: fc.grad.conv1d_input((1, 2, 6), w[:, :, 0], np.ones((1, 2, 4)),
                                          precision=bad),
             lambda: fc.choose_algorithm(x.shape, w.shape, precision=bad)]
    if bad is not None:                    # None means "the global level" per call
        for call in calls:
            with pytest.raises(ValueError, match=r"precision must be one of \('highest', "
                                                 r"'high', 'medium'"):
                call()
    with pytest.raises(ValueError, match=r"set_precision: precision must be one of"):
        fc.set_precision(bad)


def test_environment_variable_sets_the_default():
    code = "import fastconv as fc; print(fc.get_precision())"
    env = dict(os.environ, FASTCONV_PRECISION="highest")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "highest"
    env["FASTCONV_PRECISION"] = "bogus"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "high"
    assert "FASTCONV_PRECISION" in out.stderr


@pytest.mark.parametrize("op", dispatch.OPS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_highest_never_chooses_winograd_or_fft(op, dtype):
    for x_shape, w_shape, kw in SHAPES:
        for how in ("keyword", "global"):
            if how == "keyword":
                c = fc.choose_algorithm(x_shape, w_shape, dtype=dtype, op=op,
                                        precision="highest", **kw)
            else:
                fc.set_precision("highest")
                c = fc.choose_algorithm(x_shape, w_shape, dtype=dtype, op=op, **kw)
                fc.set_precision("high")
            assert c.algorithm in ("direct", "im2col"), (x_shape, w_shape, c)
            assert set(c.estimates) <= {"direct", "im2col"}
            assert c.precision == "highest"
            for name in c.excluded:
                assert dispatch.REGISTRY[name].precision != "highest"


def test_auto_picks_winograd_on_the_benchmark_3x3_layers_and_says_why_highest_does_not():
    for x_shape, w_shape, kw in SHAPES[:2]:
        for op in ("forward", "input_grad"):
            c = fc.choose_algorithm(x_shape, w_shape, op=op, **kw)
            assert c.algorithm == "winograd", c
            h = fc.choose_algorithm(x_shape, w_shape, op=op, precision="highest", **kw)
            assert "precision='highest' excludes the faster winograd" in h.reason
            assert "winograd" in h.excluded and "winograd" not in h.estimates


def test_choice_reports_error_class_and_estimate_per_candidate():
    c = fc.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert set(c.errors) == set(c.estimates)
    for name, (cls, est) in c.errors.items():
        assert cls == dispatch.REGISTRY[name].error_class
        assert 0 < est <= dispatch.REGISTRY[name].rtol["cpu"]["float32"]
    assert "error ~" in repr(c)


def test_medium_chooses_as_high():
    for x_shape, w_shape, kw in SHAPES:
        assert (fc.choose_algorithm(x_shape, w_shape, precision="medium", **kw).algorithm
                == fc.choose_algorithm(x_shape, w_shape, precision="high", **kw).algorithm)


def test_explicit_algorithm_runs_whatever_the_level(plans, rng):
    x = rng.standard_normal((1, 2, 9, 9))
    w = rng.standard_normal((3, 2, 3, 3))
    fc.conv2d(x, w, algorithm="winograd", precision="highest")
    assert plans[-1][3] == "winograd"


CASES = [((2, 8, 13, 11), (6, 8, 3, 3), dict(padding=1)),
         ((1, 3, 20, 20), (4, 3, 5, 5), dict(padding=2)),
         ((2, 4, 9, 10), (4, 2, 3, 3), dict(groups=2, padding_mode="reflect", padding=1))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("x_shape,w_shape,kw", CASES)
def test_every_algorithm_and_level_against_the_oracle(plans, level, x_shape, w_shape, kw,
                                                     dtype, rng):
    """Each algorithm the level admits, and auto at that level, within the documented
    tolerance (the registry's rtol of the algorithm that ran)."""
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    want = naive.conv(x, w, **kw)
    go = rng.standard_normal(want.shape).astype(dtype)
    gwant = naive.conv_input_grad(x.shape, w, go, **kw)
    names = [a for a in cpu_candidates(x_shape, w_shape, **kw)
             if dispatch.admits(level, dispatch.REGISTRY[a])] + ["auto"]
    for algo in names:
        plans.clear()
        y = fc.conv2d(x, w, algorithm=algo, precision=level, **kw)
        gx = fc.grad.conv2d_input(x.shape, w, go, algorithm=algo, precision=level, **kw)
        ran = [c[3] for c in plans]
        assert all(dispatch.admits(level, dispatch.REGISTRY[r]) for r in ran), (level, ran)
        for got, ref, name in ((y, want, ran[0]), (gx, gwant, ran[-1])):
            tol = dispatch.REGISTRY[name].rtol["cpu"][np.dtype(dtype).name]
            scale = max(1.0, float(np.abs(ref).max()))
            assert float(np.abs(got - ref).max()) <= tol * scale, (algo, name, level)


def test_layers_and_dask_follow_the_level(plans, rng):
    x = rng.standard_normal((2, 16, 24, 24)).astype(np.float32)
    layer = fc.nn.Conv2d(16, 16, 3, padding=1)
    fc.set_precision("highest")
    layer(x)
    assert plans[-1][3] in ("direct", "im2col")
    da = pytest.importorskip("dask.array")
    plans.clear()
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    fc.set_precision("high")
    fc.conv2d(da.from_array(x, chunks=(1, 16, 24, 24)), w, padding=1,
              precision="highest").compute()
    assert plans and all(p[3] in ("direct", "im2col") for p in plans)


def test_layer_precision_keyword_bounds_every_op(plans, rng):
    """nn.Conv2d(precision=...) holds for its forward and both gradients whatever the
    global level; None follows the global level; a bad value names the parameter."""
    x = rng.standard_normal((8, 64, 56, 56)).astype(np.float32)
    strict = fc.nn.Conv2d(64, 64, 3, padding=1, precision="highest", rng=0)
    assert "precision='highest'" in repr(strict)
    strict.backward(np.ones_like(strict(x)))
    assert [p[0] for p in plans] == ["forward", "weight_grad", "input_grad"]
    assert all(p[3] in ("direct", "im2col") for p in plans), plans
    plans.clear()
    free = fc.nn.Conv2d(64, 64, 3, padding=1, rng=0)
    free.backward(np.ones_like(free(x)))
    assert {p[0]: p[3] for p in plans}["forward"] == "winograd"
    plans.clear()
    fc.set_precision("highest")
    try:
        free(x)
    finally:
        fc.set_precision("high")
    assert plans[-1][3] in ("direct", "im2col")
    with pytest.raises(ValueError, match=r"Conv2d: precision must be one of"):
        fc.nn.Conv2d(1, 1, 3, precision="low")
