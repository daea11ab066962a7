"""fastconv.optim: update rules against torch.optim (when installed) and by hand."""
import math

import numpy as np
import pytest

from fastconv import nn, optim

try:
    import torch
    torch.set_num_threads(2)
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed")

SHAPES = [(3, 4), (5,), (2, 1, 3, 3)]


def make_params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def grads(step, seed=0, dtype=np.float32):
    rng = np.random.default_rng(1000 + 7 * step + seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.01, momentum=0.5),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.1, momentum=0.8, weight_decay=0.1, nesterov=True),
    dict(lr=0.1, momentum=0.5, maximize=True),
]
ADAM_CASES = [
    dict(),
    dict(lr=0.01, betas=(0.8, 0.99)),
    dict(lr=0.01, weight_decay=0.1),
    dict(lr=0.01, amsgrad=True),
    dict(lr=0.01, eps=1e-3, maximize=True),
]


def run_ours(cls, kw, steps=5, dtype=np.float32):
    params = make_params(dtype=dtype)
    opt = cls(params, **kw)
    for s in range(steps):
        for p, g in zip(params, grads(s, dtype=dtype)):
            p.grad = g
        opt.step()
        opt.zero_grad()
    return [p.data for p in params]


def run_torch(cls, kw, steps=5, dtype=np.float32):
    params = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in make_params(dtype=dtype)]
    opt = cls(params, **kw)
    for s in range(steps):
        for p, g in zip(params, grads(s, dtype=dtype)):
            p.grad = torch.from_numpy(g)
        opt.step()
        opt.zero_grad()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", SGD_CASES + [dict(lr=1.0, momentum=0.5, dampening=0.5)], ids=str)
def test_sgd_fused_kernel_equals_the_numpy_formulation(kw, dtype, monkeypatch):
    """SGD's one-pass kernel (cpu/nn_act.sgd_update) gives bit for bit what the NumPy
    formulation does, momentum buffer included."""
    fused = run_ours(optim.SGD, kw, dtype=dtype)
    monkeypatch.setattr(optim, "_fused_ok", lambda p, buf: False)
    plain = run_ours(optim.SGD, kw, dtype=dtype)
    for a, b in zip(fused, plain):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


def test_sgd_takes_the_numpy_path_for_other_layouts():
    # a gradient of another dtype, or non-contiguous data: the general formulation
    p = nn.Parameter(np.ones((3, 4), np.float32))
    q = nn.Parameter(np.ones((4, 3), np.float32))
    q.data = q.data.T                      # non-contiguous view
    opt = optim.SGD([p, q], lr=0.5, momentum=0.5)
    for _ in range(2):
        p.grad = np.ones((3, 4), np.float64)
        q.grad = np.ones((3, 4), np.float32)
        opt.step()
    np.testing.assert_array_equal(p.data, np.full((3, 4), 1 - 0.5 - 0.75, np.float32))
    np.testing.assert_array_equal(q.data, p.data)


@needs_torch
@pytest.mark.parametrize("kw", SGD_CASES, ids=str)
def test_sgd_matches_torch(kw):
    for ours, theirs in zip(run_ours(optim.SGD, kw), run_torch(torch.optim.SGD, kw)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(run_ours(optim.SGD, kw, dtype=np.float64),
                            run_torch(torch.optim.SGD, kw, dtype=np.float64)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-14)


@needs_torch
@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
def test_adam_matches_torch(kw):
    for ours, theirs in zip(run_ours(optim.Adam, kw), run_torch(torch.optim.Adam, kw)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(run_ours(optim.Adam, kw, dtype=np.float64),
                            run_torch(torch.optim.Adam, kw, dtype=np.float64)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-13)


def test_sgd_by_hand():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1)
    p.grad = np.array([0.5, 0.5])
    opt.step()
    g1 = np.array([0.5, 0.5]) + 0.1 * np.array([1.0, -2.0])       # [0.6, 0.3]
    b = g1                                                        # first step: no dampening
    x = np.array([1.0, -2.0]) - 0.1 * b
    np.testing.assert_allclose(p.data, x, rtol=1e-15)
    p.grad = np.array([1.0, 0.0])
    opt.step()
    g2 = np.array([1.0, 0.0]) + 0.1 * x
    b = 0.9 * b + 0.5 * g2
    np.testing.assert_allclose(p.data, x - 0.1 * b, rtol=1e-15)
    # nesterov
    q = nn.Parameter(np.array([1.0]))
    opt = optim.SGD([q], lr=0.5, momentum=0.5, nesterov=True)
    q.grad = np.array([2.0])
    opt.step()                                # b = 2, update = 2 + 0.5 * 2 = 3
    np.testing.assert_allclose(q.data, [1.0 - 1.5])


def test_adam_by_hand():
    p = nn.Parameter(np.array([1.0]))
    opt = optim.Adam([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    x, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -1.0, 2.0], start=1):
        p.grad = np.array([g])
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        x -= 0.1 / (1 - 0.9 ** t) * m / (math.sqrt(v) / math.sqrt(1 - 0.99 ** t) + 1e-8)
        np.testing.assert_allclose(p.data, [x], rtol=1e-14)
    assert opt.state_dict()["state"][0]["step"] == 3


def test_params_without_grad_are_skipped_and_zero_grad():
    a, b = make_params()[:2]
    a0, b0 = a.data.copy(), b.data.copy()
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    a.grad = np.ones_like(a.data)
    opt.step()
    np.testing.assert_array_equal(b.data, b0)
    assert not np.array_equal(a.data, a0)
    opt.zero_grad(set_to_none=False)
    assert (a.grad == 0).all() and b.grad is None
    opt.zero_grad()
    assert a.grad is None
    b.grad = np.ones_like(b.data)
    b.requires_grad = False
    opt.step()
    np.testing.assert_array_equal(b.data, b0)


def test_param_groups():
    a, b, c = make_params()
    opt = optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 1.0}], lr=0.1, momentum=0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    assert opt.param_groups[1]["momentum"] == 0.5
    c0 = c.data.copy()
    c.grad = np.ones_like(c.data)
    opt.step()
    np.testing.assert_allclose(c.data, c0 - 1.0)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert list(sd["state"]) == [2]


@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                                    (optim.Adam, dict(lr=0.01, amsgrad=True))])
def test_state_dict_round_trip_continues_exactly(cls, kw, tmp_path):
    ref = make_params()
    opt = cls(ref, **kw)
    for s in range(6):
        for p, g in zip(ref, grads(s)):
            p.grad = g
        opt.step()
    # interrupted after 3 steps: save parameters + optimiser state through nn.save/load
    params = make_params()
    opt = cls(params, **kw)
    for s in range(3):
        for p, g in zip(params, grads(s)):
            p.grad = g
        opt.step()
    nn.save({"params": [p.data for p in params], "opt": opt.state_dict()}, tmp_path / "s.npz")
    saved = nn.load(tmp_path / "s.npz")
    params2 = [nn.Parameter(d) for d in saved["params"]]
    opt2 = cls(params2, lr=123.0)          # options come back from the state dict
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["lr"] == kw["lr"]
    for s in range(3, 6):
        for p, g in zip(params2, grads(s)):
            p.grad = g
        opt2.step()
    for p, q in zip(params2, ref):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_is_a_copy_and_mismatch_errors():
    params = make_params()
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    for p, g in zip(params, grads(0)):
        p.grad = g
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"][...] = 0
    assert np.abs(opt.state[id(params[0])]["momentum_buffer"]).sum() > 0
    other = optim.SGD(make_params()[:2], lr=0.1)
    with pytest.raises(ValueError, match="parameters"):
        other.load_state_dict(opt.state_dict())
    swapped = optim.SGD([make_params()[1], make_params()[0], make_params()[2]], lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        swapped.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="state"):
        other.load_state_dict({"foo": 1})


def test_validation_errors():
    p = make_params()
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD(p, lr=-0.1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match="Parameter"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="single Parameter"):
        optim.SGD(p[0], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": p}, {"params": p[:1]}], lr=0.1)
    with pytest.raises(ValueError, match="unknown option"):
        optim.SGD([{"params": p, "betas": (0.9, 0.9)}], lr=0.1)


def test_training_reduces_loss():
    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    loss_fn = nn.CrossEntropyLoss()
    for cls, kw in [(optim.SGD, dict(lr=0.5, momentum=0.9)), (optim.Adam, dict(lr=0.05))]:
        for p in model.parameters():
            p.data[...] = rng.uniform(-0.3, 0.3, p.shape)
        opt = cls(model.parameters(), **kw)
        first = loss_fn(model(x), y)
        for _ in range(60):
            loss_fn(model(x), y)
            model.backward(loss_fn.backward(), input_grad=False)
            opt.step()
            opt.zero_grad()
        assert loss_fn(model(x), y) < 0.5 * first
