"""NLL loss (cpu/nn_act.nll_rows / nll_grad behind F.nll_loss, NLLLoss, CrossEntropyLoss):
loss and gradient against a float64 loop over rows and, when installed, PyTorch; class
weights, ignore_index, every reduction, both dtypes, non-finite log-probabilities."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import nn
from fastconv.nn import functional as F

try:
    import torch
except ImportError:        # the optional oracle
    torch = None

PROPERTY = settings(max_examples=80, deadline=None, database=None, print_blob=True)


@st.composite
def problems(draw):
    M, C = draw(st.integers(0, 9)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    logp = rng.standard_normal((M, C)).astype(dtype)
    if M and draw(st.booleans()):
        logp[draw(st.integers(0, M - 1)), draw(st.integers(0, C - 1))] = draw(
            st.sampled_from([-np.inf, np.nan]))
    ignore = draw(st.sampled_from([-100, 0, 2]))
    t = rng.integers(0, C, M)
    if M and draw(st.booleans()):
        t[draw(st.integers(0, M - 1))] = ignore if ignore < 0 else t[0]
    weight = rng.uniform(0, 2, C).astype(dtype) if draw(st.booleans()) else None
    return logp, t, weight, ignore, draw(st.sampled_from(["mean", "sum", "none"]))


def reference(logp, t, weight, ignore, reduction):
    """(loss, dL/dlogp) in float64, rows by rows; ignored rows add nothing."""
    M, C = logp.shape
    w = np.ones(C) if weight is None else weight.astype(np.float64)
    losses, wi = np.zeros(M), np.zeros(M)
    for m in range(M):
        if t[m] != ignore:
            wi[m] = w[t[m]]
            losses[m] = -wi[m] * float(logp[m, t[m]])
    denom = wi.sum() if reduction == "mean" else 1.0
    g = np.zeros((M, C))
    for m in range(M):
        if t[m] != ignore:
            g[m, t[m]] = -wi[m] / denom if reduction != "none" else -wi[m]
    if reduction == "none":
        return losses, g
    with np.errstate(invalid="ignore", divide="ignore"):
        return (losses.sum() / denom if denom else np.nan), g


@PROPERTY
@given(problems())
def test_nll_matches_the_float64_loop(problem):
    logp, t, weight, ignore, reduction = problem
    want, want_g = reference(logp, t, weight, ignore, reduction)
    tol = 1e-6 if logp.dtype == np.float32 else 1e-12
    loss = F.nll_loss(logp, t, weight, ignore, reduction)
    np.testing.assert_allclose(loss, want, rtol=tol, atol=tol)
    g = F.nll_loss_backward(logp, t, weight, ignore, reduction)
    assert g.dtype == logp.dtype and g.shape == logp.shape
    np.testing.assert_allclose(g, want_g, rtol=tol, atol=tol)
    layer = nn.NLLLoss(weight, ignore, reduction)
    np.testing.assert_array_equal(layer(logp, t), loss)
    np.testing.assert_array_equal(layer.backward(), g)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed (optional oracle)")
@PROPERTY
@given(problems())
def test_nll_matches_torch(problem):
    logp, t, weight, ignore, reduction = problem
    lt = torch.tensor(logp, requires_grad=True)
    out = torch.nn.functional.nll_loss(lt, torch.tensor(t), None if weight is None
                                       else torch.tensor(weight), ignore_index=ignore,
                                       reduction=reduction)
    out.backward(torch.ones_like(out))
    tol = 1e-6 if logp.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(F.nll_loss(logp, t, weight, ignore, reduction),
                               out.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(F.nll_loss_backward(logp, t, weight, ignore, reduction),
                               lt.grad.numpy(), rtol=tol, atol=tol)


def test_out_of_range_target_is_named():
    with pytest.raises(ValueError, match="target 7 is out of bounds for 3 classes"):
        F.nll_loss(np.zeros((3, 3), np.float32), np.array([0, 7, -5]))
    with pytest.raises(ValueError, match="target -5 is out of bounds"):
        nn.NLLLoss()(np.zeros((3, 3), np.float32), np.array([0, -5, 9]))
