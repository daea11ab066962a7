"""fastconv.nn: layers against PyTorch (when installed) and float64 finite differences,
module bookkeeping (parameters, state dicts, modes, repr) and nn.save / nn.load."""
import doctest
import os

import numpy as np
import pytest

import fastconv
from fastconv import nn
from fastconv.cpu import nn_act
from fastconv.nn import functional as F

try:
    import torch
    torch.set_num_threads(2)
except ImportError:           # the torch comparisons skip; finite differences still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed")


# -- helpers --------------------------------------------------------------------------------
def rand(shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def numeric_grad(f, x, coords, eps=1e-6):
    """Central differences of the scalar f() with respect to x at the given flat coords."""
    flat = x.reshape(-1)
    out = []
    for i in coords:
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out.append((fp - fm) / (2 * eps))
    return np.array(out)


def some_coords(n, k=12, seed=0):
    return np.random.default_rng(seed).choice(n, size=min(n, k), replace=False)


def check_layer_gradients(layer, x, seed=0, tol=1e-6):
    """Backward of ``layer`` (float64) vs finite differences of sum(G * layer(x))."""
    layer.train()
    layer.zero_grad()
    y = layer(x)
    G = rand(y.shape, seed + 1)
    gx = layer.backward(G)

    def loss():
        return float((G * layer(x)).sum())

    scale = max(1.0, float(np.abs(gx).max()))
    coords = some_coords(x.size, seed=seed)
    num = numeric_grad(loss, x, coords)
    np.testing.assert_allclose(gx.reshape(-1)[coords], num, atol=tol * scale, rtol=tol)
    for name, p in layer.named_parameters():
        scale = max(1.0, float(np.abs(p.grad).max()))
        coords = some_coords(p.size, seed=seed)
        num = numeric_grad(loss, p.data, coords)
        np.testing.assert_allclose(p.grad.reshape(-1)[coords], num, atol=tol * scale, rtol=tol,
                                   err_msg=f"gradient of {name}")


def copy_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)


def mnist_net():
    return nn.Sequential(
        nn.Conv2d(1, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 10), nn.LogSoftmax(dim=1))


def torch_mnist_net():
    T = torch.nn
    return T.Sequential(
        T.Conv2d(1, 10, kernel_size=5), T.MaxPool2d(2), T.ReLU(),
        T.Conv2d(10, 20, kernel_size=5), T.MaxPool2d(2), T.ReLU(),
        T.Flatten(), T.Linear(320, 50), T.ReLU(), T.Linear(50, 10), T.LogSoftmax(dim=1))


# -- Conv2d -----------------------------------------------------------------------------------
CONV_CASES = [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=(1, 2), dilation=2),
    dict(padding="same"),
    dict(padding="same", stride=2),                      # TF/JAX 'same' (fastconv semantics)
    dict(padding=((0, 2), (1, 0))),
    dict(groups=2, bias=False),
    dict(padding=1, padding_mode="reflect"),
    dict(padding=2, padding_mode="replicate", stride=(1, 2)),
    dict(padding=1, padding_mode="circular", groups=2),
]


def case_id(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items()) or "default"


@pytest.mark.parametrize("kw", CONV_CASES, ids=case_id)
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
def test_conv2d_backward_matches_finite_differences(kw, algorithm):
    conv = nn.Conv2d(4, 6, 3, algorithm=algorithm, dtype=np.float64, rng=0, **kw)
    check_layer_gradients(conv, rand((2, 4, 7, 6), 1))


# torch has neither strided 'same' nor per-side padding pairs
TORCH_CONV_CASES = [kw for kw in CONV_CASES
                    if not (kw.get("padding") == "same" and "stride" in kw)
                    and not (isinstance(kw.get("padding"), tuple)
                             and isinstance(kw["padding"][0], tuple))]


@needs_torch
@pytest.mark.parametrize("kw", TORCH_CONV_CASES, ids=case_id)
def test_conv2d_matches_torch(kw):
    conv = nn.Conv2d(4, 6, 3, rng=0, **kw)
    tconv = torch.nn.Conv2d(4, 6, 3, **kw)
    copy_from_torch(conv, tconv)
    x = rand((3, 4, 9, 8), 2, np.float32)
    y = conv(x)
    np.testing.assert_allclose(y, tconv(t(x)).detach().numpy(), atol=1e-5)
    G = rand(y.shape, 3, np.float32)
    gx = conv.backward(G)
    tx = t(x)
    tconv(tx).backward(torch.from_numpy(G))
    np.testing.assert_allclose(gx, tx.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(conv.weight.grad, tconv.weight.grad.numpy(), atol=1e-4, rtol=1e-4)
    if conv.bias is not None:
        np.testing.assert_allclose(conv.bias.grad, tconv.bias.grad.numpy(), atol=1e-4, rtol=1e-4)
    assert repr(conv) == repr(tconv)


def test_conv2d_unbatched_and_dtype_cast():
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    x = rand((2, 5, 5), 0)                                 # float64 into a float32 layer
    y = conv(x)
    assert y.shape == (3, 5, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y, fastconv.conv2d(x.astype(np.float32), conv.weight.data,
                                                  conv.bias.data, padding=1), atol=1e-6)
    assert conv.backward(np.ones_like(y)).shape == (2, 5, 5)
    u8 = np.zeros((1, 2, 4, 4), np.uint8)
    assert conv(u8).dtype == np.float32


def test_conv2d_input_grad_false_skips_and_weight_matches_public_api():
    conv = nn.Conv2d(1, 4, 5, rng=0, dtype=np.float64)
    x = rand((3, 1, 12, 12), 0)
    y = conv(x)
    G = rand(y.shape, 1)
    assert conv.backward(G, input_grad=False) is None
    np.testing.assert_allclose(conv.weight.grad,
                               fastconv.grad.conv2d_weight(x, conv.weight.shape, G), rtol=1e-12)
    np.testing.assert_allclose(conv.bias.grad, G.sum(axis=(0, 2, 3)), rtol=1e-12)


def test_conv2d_weight_grad_reuses_only_its_own_forwards_transpose(lanes_costs):
    # the lanes kernels (many images, small planes: MNIST's conv2) keep the forward's
    # transposed input for the weight gradient: it must be that of the latest forward,
    # in train mode only, and the layer's results those of the public functions
    from fastconv.cpu import direct
    conv = nn.Conv2d(10, 20, 5, rng=0)
    x1, x2 = rand((64, 10, 12, 12), 0, np.float32), rand((64, 10, 12, 12), 1, np.float32)
    assert direct.minor_pays(64, 1, 10, 20, (1, 8, 8), (1, 5, 5), (1, 1, 1), (1, 1, 1),
                             (1, 12, 12), ((0, 1), (0, 12), (0, 12)), np.dtype(np.float32))
    conv(x1)
    y = conv(x2)
    fastconv.conv2d(x1, conv.weight.data)          # the workspace now holds x1's transpose
    G = rand(y.shape, 2, np.float32)
    conv.backward(G, input_grad=False)
    np.testing.assert_array_equal(conv.weight.grad,
                                  fastconv.grad.conv2d_weight(x2, conv.weight.shape, G))
    assert conv._ctx == {}
    conv(x1)
    assert "minor_x" in conv._ctx["saved"]
    conv.eval()
    conv(x1)
    assert conv._ctx == {}                        # eval mode keeps nothing
    conv.train()
    conv.weight.requires_grad = False             # a frozen weight: no weight gradient
    conv(x1)
    assert conv._ctx["saved"] == {}
    # a layer whose forward takes the lanes kernel but whose weight gradient does not
    # keeps nothing either
    conv = nn.Conv2d(10, 20, 3, groups=2, rng=0)
    x = rand((32, 10, 10, 10), 3, np.float32)
    assert direct.minor_pays(32, 2, 5, 10, (1, 8, 8), (1, 3, 3), (1, 1, 1), (1, 1, 1),
                             (1, 10, 10), ((0, 1), (0, 10), (0, 10)), np.dtype(np.float32))
    assert not direct.minor_wgrad_pays(32, 2, 5, 10, (1, 8, 8), (1, 3, 3), (1, 1, 1),
                                       (1, 10, 10), np.dtype(np.float32))
    conv(x)
    assert conv._ctx["saved"] == {}


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
def test_conv2d_layer_runs_the_public_api_path(algorithm):
    kw = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2,
              padding_mode="reflect")
    conv = nn.Conv2d(4, 6, 3, algorithm=algorithm, rng=0, **kw)
    x = rand((2, 4, 9, 8), 0, np.float32)
    y = conv(x)
    np.testing.assert_array_equal(
        y, fastconv.conv2d(x, conv.weight.data, conv.bias.data, algorithm=algorithm, **kw))
    G = rand(y.shape, 1, np.float32)
    gx = conv.backward(G)
    np.testing.assert_array_equal(gx, fastconv.grad.conv2d_input(
        x.shape, conv.weight.data, G, algorithm=algorithm, **kw))
    np.testing.assert_array_equal(conv.weight.grad, fastconv.grad.conv2d_weight(
        x, conv.weight.shape, G, algorithm=algorithm, **kw))


def test_conv2d_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(1, 1, 3, padding="full")
    with pytest.raises(ValueError, match="algorithm"):
        nn.Conv2d(1, 1, 3, algorithm="winograd-ish")
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="3 input channels per group"):
        conv(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv(np.zeros((1, 3, 2, 2), np.float32))
    y = conv(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="grad_output has shape"):
        conv.backward(np.zeros((1, 4, 5, 5), np.float32))
    conv.eval()
    conv(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(RuntimeError, match="train mode"):
        conv.backward(np.zeros_like(y))


# -- Linear -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(bias):
    check_layer_gradients(nn.Linear(5, 3, bias=bias, dtype=np.float64, rng=0), rand((4, 5), 1))
    check_layer_gradients(nn.Linear(5, 3, dtype=np.float64, rng=0), rand((2, 3, 5), 2))


@needs_torch
def test_linear_matches_torch():
    lin, tlin = nn.Linear(320, 50), torch.nn.Linear(320, 50)
    copy_from_torch(lin, tlin)
    x = rand((64, 320), 0, np.float32)
    tx = t(x)
    ty = tlin(tx)
    y = lin(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-5)
    G = rand(y.shape, 1, np.float32)
    ty.backward(torch.from_numpy(G))
    np.testing.assert_allclose(lin.backward(G), tx.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(lin.weight.grad, tlin.weight.grad.numpy(), atol=1e-4)
    np.testing.assert_allclose(lin.bias.grad, tlin.bias.grad.numpy(), atol=1e-4)
    assert repr(lin) == repr(tlin)
    with pytest.raises(ValueError, match="in_features=320"):
        lin(np.zeros((2, 3), np.float32))


# -- pooling, activations, reshapes -------------------------------------------------------------
POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), ceil_mode=True),
    dict(kernel_size=3, stride=1, dilation=2),
    dict(kernel_size=2, stride=1, padding=1, dilation=2, ceil_mode=True),
    dict(kernel_size=2, stride=(1, 2), dilation=(2, 1)),
    dict(kernel_size=2, ceil_mode=True),
]


@pytest.mark.parametrize("kw", POOL_CASES, ids=str)
def test_maxpool_gradients(kw):
    # distinct values so the argmax is unique and finite differences are well defined
    x = np.random.default_rng(0).permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8) / 10.0
    check_layer_gradients(nn.MaxPool2d(**kw), x, tol=1e-6)


@needs_torch
@pytest.mark.parametrize("kw", POOL_CASES, ids=str)
def test_maxpool_matches_torch(kw):
    x = rand((2, 3, 9, 8), 0, np.float32)
    pool, tpool = nn.MaxPool2d(**kw), torch.nn.MaxPool2d(**kw)
    tx = t(x)
    ty = tpool(tx)
    y = pool(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    G = rand(y.shape, 1, np.float32)
    ty.backward(torch.from_numpy(G))
    np.testing.assert_allclose(pool.backward(G), tx.grad.numpy(), atol=1e-6)
    assert repr(pool) == repr(tpool)
    _, idx = F.max_pool2d(x, return_indices=True, **kw)
    _, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
    np.testing.assert_array_equal(idx, tidx.numpy())


AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=2, padding=(1, 1), ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, divisor_override=3),
]


@pytest.mark.parametrize("kw", AVG_CASES, ids=str)
def test_avgpool_gradients(kw):
    check_layer_gradients(nn.AvgPool2d(**kw), rand((2, 3, 7, 8), 0))


@needs_torch
@pytest.mark.parametrize("kw", AVG_CASES, ids=str)
def test_avgpool_matches_torch(kw):
    x = rand((2, 3, 9, 8), 0, np.float32)
    pool, tpool = nn.AvgPool2d(**kw), torch.nn.AvgPool2d(**kw)
    tx = t(x)
    ty = tpool(tx)
    y = pool(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-6)
    G = rand(y.shape, 1, np.float32)
    ty.backward(torch.from_numpy(G))
    np.testing.assert_allclose(pool.backward(G), tx.grad.numpy(), atol=1e-6)
    assert repr(pool) == repr(tpool)


def test_pool_errors():
    with pytest.raises(ValueError, match="at most half"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="too small"):
        nn.MaxPool2d(3)(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="4-D"):
        nn.AvgPool2d(2)(np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match="kernel_size"):
        nn.MaxPool2d("2")
    with pytest.raises(ValueError, match="divisor_override"):
        nn.AvgPool2d(2, divisor_override=0)


@needs_torch
@pytest.mark.parametrize("k", [2, 3])
def test_maxpool_nan_and_ties_match_torch(k):
    x = np.round(rand((2, 3, 8, 9), 0, np.float32))          # many ties
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[1, 2, 5, 5] = np.nan
    y, idx = F.max_pool2d(x, k, 1, return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, 1, return_indices=True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())


def test_maxpool_nan_propagates_and_unbatched():
    x = np.zeros((1, 4, 4), np.float32)
    x[0, 1, 1] = np.nan
    y = nn.MaxPool2d(2)(x)
    assert y.shape == (1, 2, 2) and np.isnan(y[0, 0, 0]) and (y.reshape(-1)[1:] == 0).all()


def test_relu_and_flatten_and_logsoftmax_gradients():
    x = rand((3, 4, 5), 0)
    x[np.abs(x) < 1e-3] = 0.5                      # keep away from the kink
    check_layer_gradients(nn.ReLU(), x)
    check_layer_gradients(nn.Flatten(), rand((2, 3, 2, 2), 1))
    check_layer_gradients(nn.Flatten(0, 1), rand((2, 3, 2), 1))
    for dim in (0, 1, -1):
        check_layer_gradients(nn.LogSoftmax(dim=dim), rand((3, 4, 5), 2))


@needs_torch
def test_activations_match_torch():
    x = rand((4, 3, 5, 2), 0, np.float32)
    x[0, 0, 0, 0] = np.nan
    np.testing.assert_array_equal(nn.ReLU()(x), torch.relu(torch.from_numpy(x)).numpy())
    for dim in (0, 1, 3, -2):
        ls, tls = nn.LogSoftmax(dim=dim), torch.nn.LogSoftmax(dim=dim)
        xx = x.copy()
        xx[0, 0, 0, 0] = 30.0
        tx = t(xx)
        ty = tls(tx)
        np.testing.assert_allclose(ls(xx), ty.detach().numpy(), atol=1e-5)
        G = rand(xx.shape, 1, np.float32)
        ty.backward(torch.from_numpy(G))
        np.testing.assert_allclose(ls.backward(G), tx.grad.numpy(), atol=1e-5)
        assert repr(ls) == repr(tls)
    assert repr(nn.ReLU()) == repr(torch.nn.ReLU())
    assert repr(nn.Flatten()) == repr(torch.nn.Flatten())
    assert repr(nn.Dropout(0.25)) == repr(torch.nn.Dropout(0.25))
    # extreme logits stay finite, as in torch
    big = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    np.testing.assert_allclose(F.log_softmax(big, 1),
                               torch.log_softmax(torch.from_numpy(big), 1).numpy())


def test_parallel_kernels_match_serial(monkeypatch):
    """Large inputs run the parallel variants of the pooling/activation kernels."""
    from fastconv.cpu import nn_act, pool
    x = rand((3, 4, 9, 10), 0, np.float32)
    x[0, 0, 0, 0] = np.nan

    def everything():
        out = []
        for layer, inp in [(nn.MaxPool2d(3, 2, 1), x), (nn.AvgPool2d(3, 2, 1), x),
                           (nn.ReLU(), x), (nn.LogSoftmax(1), x[:, :, 0, 0])]:
            y = layer(inp)
            out += [y, layer.backward(rand(y.shape, 1, np.float32))]
        return out

    serial = everything()
    monkeypatch.setattr(pool, "PARALLEL_MIN", 0)
    monkeypatch.setattr(nn_act, "PARALLEL_MIN", 0)
    for a, b in zip(everything(), serial):
        np.testing.assert_array_equal(a, b)


def test_relu_inplace():
    x = np.array([-1.0, 2.0], np.float32)
    relu = nn.ReLU(inplace=True)
    y = relu(x)
    assert y is x and x.tolist() == [0.0, 2.0]
    assert repr(relu) == "ReLU(inplace=True)"


def test_dropout_reproducible_scaled_and_eval_identity():
    x = np.ones((200, 50), np.float32)
    a = nn.Dropout(0.3, rng=5)(x)
    b = nn.Dropout(0.3, rng=5)(x)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a).tolist()) == {0.0, np.float32(1 / 0.7)}
    assert abs((a == 0).mean() - 0.3) < 0.02
    drop = nn.Dropout(0.3, rng=1)
    y = drop(x)
    g = drop.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(g, 2 * y)
    drop.eval()
    assert drop(x) is not None and np.array_equal(drop(x), x)
    assert np.array_equal(drop.backward(x), x)
    assert (nn.Dropout(1.0)(x) == 0).all()
    nn.manual_seed(3)
    c = nn.Dropout(0.5)(x)
    nn.manual_seed(3)
    np.testing.assert_array_equal(c, nn.Dropout(0.5)(x))
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)


# -- losses -------------------------------------------------------------------------------------
LOSS_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weight=np.array([0.5, 1.0, 2.0, 0.1], np.float32)),
    dict(ignore_index=2),
    dict(weight=np.array([0.5, 1.0, 2.0, 0.1], np.float32), ignore_index=1, reduction="sum"),
]


@pytest.mark.parametrize("kw", LOSS_CASES, ids=str)
@pytest.mark.parametrize("name", ["NLLLoss", "CrossEntropyLoss"])
def test_losses_finite_differences(name, kw):
    x = rand((5, 4), 0)
    if name == "NLLLoss":
        x = F.log_softmax(x, 1)
    target = np.array([0, 1, 2, 3, 1])
    kw64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    loss_fn = getattr(nn, name)(**kw64)
    G = rand((5,), 3) if kw.get("reduction") == "none" else 0.7

    def loss():
        return float(np.sum(G * loss_fn(x, target)))

    loss()
    gx = loss_fn.backward(G)
    num = numeric_grad(loss, x, range(x.size))
    np.testing.assert_allclose(gx.reshape(-1), num, atol=1e-7)


@needs_torch
@pytest.mark.parametrize("kw", LOSS_CASES, ids=str)
@pytest.mark.parametrize("name", ["NLLLoss", "CrossEntropyLoss"])
def test_losses_match_torch(name, kw):
    x = rand((6, 4, 3), 0, np.float32)                      # (N, C, d1): K-dimensional loss
    target = np.random.default_rng(1).integers(0, 4, (6, 3))
    tkw = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    ours, theirs = getattr(nn, name)(**kw), getattr(torch.nn, name)(**tkw)
    tx = t(x)
    tl = theirs(tx, torch.from_numpy(target))
    loss = ours(x, target.astype(np.uint8) if "ignore_index" not in kw else target)
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-5, atol=1e-6)
    G = rand(np.shape(loss), 2, np.float32) if kw.get("reduction") == "none" else None
    tl.backward(torch.from_numpy(G) if G is not None else None)
    np.testing.assert_allclose(ours.backward(G), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert repr(ours) == repr(theirs)


def test_loss_errors():
    loss_fn = nn.NLLLoss()
    with pytest.raises(ValueError, match="out of bounds"):
        loss_fn(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="target shape"):
        loss_fn(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        loss_fn(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        nn.CrossEntropyLoss(reduction="avg")
    with pytest.raises(RuntimeError, match="call the loss"):
        nn.CrossEntropyLoss().backward()
    assert np.isnan(nn.NLLLoss(ignore_index=0)(np.zeros((2, 3)), np.array([0, 0])))


# -- the MNIST network, end to end -------------------------------------------------------------
@needs_torch
def test_mnist_net_matches_torch_outputs_and_gradients():
    tnet = torch_mnist_net()
    net = mnist_net()
    copy_from_torch(net, tnet)
    assert repr(net) == repr(tnet)
    assert list(net.state_dict()) == list(tnet.state_dict())
    assert [p.shape for p in net.parameters()] == [tuple(p.shape) for p in tnet.parameters()]
    x = rand((16, 1, 28, 28), 0, np.float32)
    y = np.random.default_rng(1).integers(0, 10, 16)
    loss_fn = nn.NLLLoss()
    loss = loss_fn(net(x), y)
    net.backward(loss_fn.backward(), input_grad=False)
    tloss = torch.nn.NLLLoss()(tnet(torch.from_numpy(x)), torch.from_numpy(y))
    tloss.backward()
    assert abs(loss - tloss.item()) < 1e-5
    for (name, p), tp in zip(net.named_parameters(), tnet.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), atol=2e-6, rtol=1e-4, err_msg=name)


def test_mnist_net_float64_gradient_check():
    net = mnist_net().double()
    x = rand((2, 1, 28, 28), 0)
    y = np.array([3, 7])
    loss_fn = nn.NLLLoss()
    loss_fn(net(x), y)
    gx = net.backward(loss_fn.backward())

    def loss():
        return loss_fn(net(x), y)

    coords = some_coords(x.size, 8)
    np.testing.assert_allclose(gx.reshape(-1)[coords], numeric_grad(loss, x, coords), atol=1e-7)
    for name, p in net.named_parameters():
        coords = some_coords(p.size, 4)
        np.testing.assert_allclose(p.grad.reshape(-1)[coords], numeric_grad(loss, p.data, coords),
                                   atol=1e-7, err_msg=name)


# -- initialisation and randomness ------------------------------------------------------------
def test_default_init_bounds_and_reproducibility():
    conv = nn.Conv2d(10, 20, 5, rng=0)
    bound = 1 / np.sqrt(10 * 25)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.bias.data).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.9 * bound                  # uniform, full range
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.1 * bound
    assert conv.weight.dtype == np.float32
    lin = nn.Linear(320, 50, rng=np.random.default_rng(1))
    assert np.abs(lin.weight.data).max() <= 1 / np.sqrt(320)
    np.testing.assert_array_equal(nn.Conv2d(10, 20, 5, rng=0).weight.data, conv.weight.data)
    nn.manual_seed(7)
    a = mnist_net().state_dict()
    nn.manual_seed(7)
    b = mnist_net().state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    state = nn.get_rng_state()
    c = mnist_net().state_dict()
    nn.set_rng_state(state)
    d = mnist_net().state_dict()
    assert all(np.array_equal(c[k], d[k]) for k in c)
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    with pytest.raises(TypeError, match="rng"):
        nn.Linear(2, 2, rng="seed")


# -- Module bookkeeping -----------------------------------------------------------------------
def test_parameters_order_names_and_state_dict_round_trip():
    net = mnist_net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias",
                     "9.weight", "9.bias"]
    state = net.state_dict()
    assert list(state) == names
    state["0.weight"][...] = 0                     # a copy: the model is untouched
    assert np.abs(net[0].weight.data).sum() > 0
    other = mnist_net()
    ref = [p.data for p in other.parameters()]
    assert other.load_state_dict(net.state_dict()) == ([], [])
    for p, q, r in zip(other.parameters(), net.parameters(), ref):
        np.testing.assert_array_equal(p.data, q.data)
        assert p.data is r                         # loaded in place: optimisers keep working
    bad = net.state_dict()
    del bad["9.bias"]
    with pytest.raises(ValueError, match="missing key"):
        other.load_state_dict(bad)
    assert other.load_state_dict(bad, strict=False) == (["9.bias"], [])
    bad = net.state_dict()
    bad["0.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(bad)


def test_nested_modules_and_repr():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, bias=False)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x))

    net = nn.Sequential(Block(), nn.Flatten(), nn.Linear(8, 2))
    assert [n for n, _ in net.named_parameters()] == ["0.conv.weight", "2.weight", "2.bias"]
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Block(\n"
        "    (conv): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), bias=False)\n"
        "    (act): ReLU()\n"
        "  )\n"
        "  (1): Flatten(start_dim=1, end_dim=-1)\n"
        "  (2): Linear(in_features=8, out_features=2, bias=True)\n"
        ")")
    assert len(net) == 3 and isinstance(net[-1], nn.Linear) and len(net[:2]) == 2
    with pytest.raises(TypeError, match="Parameter or None"):
        net[2].weight = np.zeros((2, 8))


def test_train_eval_modes_accumulation_and_zero_grad():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2))
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    x = rand((5, 3), 0, np.float32)
    net(x)
    with pytest.raises(RuntimeError, match="train mode"):
        net.backward(np.ones((5, 2), np.float32))
    net.train()
    net[2].p = 0.0
    g = np.ones((5, 2), np.float32)
    net(x)
    net.backward(g)
    first = [p.grad.copy() for p in net.parameters()]
    net(x)
    net.backward(g)
    for p, f in zip(net.parameters(), first):
        np.testing.assert_allclose(p.grad, 2 * f, rtol=1e-6)    # accumulates, like torch
    with pytest.raises(RuntimeError, match="once per forward"):
        net.backward(g)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net[0].weight.requires_grad = False
    net(x)
    net.backward(g)
    assert net[0].weight.grad is None and net[0].bias.grad is not None


def test_to_dtype():
    net = mnist_net()
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net(np.zeros((1, 1, 28, 28))).dtype == np.float64
    net.float()
    assert net(np.zeros((1, 1, 28, 28))).dtype == np.float32
    with pytest.raises(TypeError, match="float32 or float64"):
        net.to(np.int32)



# -- edge cases: wrong gradient shapes, empty batches, 0-d, non-finite values ----------------
@pytest.mark.parametrize("layer, x, bad", [
    (lambda: nn.ReLU(), (2, 2), (1000, 1000)),              # would read past the output
    (lambda: nn.ReLU(), (4, 3), (3, 4)),                    # same size, other shape
    (lambda: nn.LogSoftmax(1), (2, 3), (2, 3000)),
    (lambda: nn.Dropout(0.5, rng=0), (4, 3), (1, 3)),       # would broadcast
    (lambda: nn.Flatten(), (2, 3, 4), (2, 11)),
    (lambda: nn.Conv2d(1, 2, 3), (1, 1, 5, 5), (1, 2, 3, 4)),
    (lambda: nn.Linear(3, 2), (4, 3), (4, 3)),
], ids=["relu", "relu-transposed", "logsoftmax", "dropout", "flatten", "conv", "linear"])
def test_backward_rejects_a_grad_output_of_the_wrong_shape(layer, x, bad):
    m = layer()
    m(rand(x, dtype=np.float32))
    with pytest.raises(ValueError, match=r"grad_output has shape .*" + str(bad[0])):
        m.backward(np.ones(bad, np.float32))


@pytest.mark.parametrize("bad", ["abc", np.array([1 + 2j]), np.array(["a"], object)])
@pytest.mark.parametrize("layer", [lambda: nn.Conv2d(1, 1, 3), lambda: nn.Linear(3, 2),
                                   lambda: nn.ReLU(), lambda: nn.MaxPool2d(2)],
                         ids=["Conv2d", "Linear", "ReLU", "MaxPool2d"])
def test_non_numeric_input_names_the_layer(layer, bad):
    m = layer()
    with pytest.raises(TypeError, match=type(m).__name__ + "|relu"):
        m(bad)


def test_empty_batch_trains_through_every_layer():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Dropout(0.5, rng=0),
                        nn.Flatten(), nn.Linear(2, 3), nn.LogSoftmax(1))
    y = net(np.zeros((0, 1, 4, 4), np.float32))
    assert y.shape == (0, 3)
    assert net.backward(np.zeros((0, 3), np.float32)).shape == (0, 1, 4, 4)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    lin = nn.Linear(0, 2)
    y = lin(np.zeros((3, 0), np.float32))
    assert y.shape == (3, 2)
    assert lin.backward(np.ones((3, 2), np.float32)).shape == (3, 0)
    assert nn.LogSoftmax(1)(np.zeros((2, 0))).shape == (2, 0)


@needs_torch
def test_zero_d_inputs_keep_their_shape_like_torch():
    for m, tm in [(nn.ReLU(), torch.nn.ReLU()), (nn.LogSoftmax(0), torch.nn.LogSoftmax(0))]:
        x = np.float32(-1.5)
        y = m(x)
        ty = tm(torch.tensor(x))
        assert y.shape == tuple(ty.shape) == ()
        np.testing.assert_allclose(y, ty.numpy())
    assert nn.Parameter(np.array(2.0)).shape == ()


@needs_torch
def test_log_softmax_and_relu_non_finite_values_match_torch():
    x = np.array([[1e17, 1e17, 0.0], [3e38, -3e38, 1.0], [np.nan, 0.0, 1.0]])
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        ls = nn.LogSoftmax(1)
        with np.errstate(over="ignore"):
            got = ls(xd)
            want = torch.log_softmax(torch.from_numpy(xd), 1).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6)
    relu = nn.ReLU()
    y = relu(np.array([np.nan, -1.0, 2.0], np.float32))
    g = relu.backward(np.ones(3, np.float32))
    t = torch.tensor([np.nan, -1.0, 2.0], requires_grad=True)
    torch.relu(t).backward(torch.ones(3))
    np.testing.assert_array_equal(g, t.grad.numpy())
    assert np.isnan(y[0])


@needs_torch
@pytest.mark.parametrize("name", ["NLLLoss", "CrossEntropyLoss"])
@pytest.mark.parametrize("kw, target", [
    ({"ignore_index": 1}, [1, 1]),                                # no row left for the mean
    ({"weight": np.zeros(3)}, [0, 2]),                            # weights sum to zero
    ({"ignore_index": 2, "weight": np.array([0.0, 1.0, 1.0])}, [0, 2]),
])
def test_losses_with_nothing_to_average_match_torch(name, kw, target):
    x = rand((2, 3))
    t = np.array(target)
    loss = getattr(nn, name)(**kw)
    got = loss(x, t)
    tkw = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    tx = torch.tensor(x, requires_grad=True)
    want = getattr(torch.nn, name)(**tkw)(tx, torch.from_numpy(t))
    want.backward()
    np.testing.assert_equal(np.isnan(got), np.isnan(want.item()))
    np.testing.assert_allclose(loss.backward(), tx.grad.numpy(), rtol=1e-12)


def test_loss_backward_rejects_a_grad_of_the_wrong_shape():
    loss = nn.CrossEntropyLoss(reduction="none")
    loss(rand((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"grad must be .*\(2,\).*got shape \(3,\)"):
        loss.backward(np.ones(3))
    loss = nn.CrossEntropyLoss()
    loss(rand((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"grad must be a real scalar.*\(2,\)"):
        loss.backward(np.ones(2))


@pytest.mark.parametrize("layer", [lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2)],
                         ids=["MaxPool2d", "AvgPool2d"])
def test_pooling_gradient_has_the_inputs_dtype(layer):
    m = layer()
    y = m(rand((1, 2, 4, 4), dtype=np.float32))
    g = m.backward(np.ones(y.shape, np.float64))
    assert g.dtype == np.float32 and g.shape == (1, 2, 4, 4)


def test_accumulate_never_writes_into_the_callers_array():
    p = nn.Parameter(np.zeros(3, np.float32))
    g1 = np.ones(3, np.float32)
    p.accumulate(g1)
    p.accumulate(np.ones(3, np.float32))
    assert g1.tolist() == [1, 1, 1] and p.grad.tolist() == [2, 2, 2]


# -- save / load ------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    from fastconv import optim
    net = mnist_net()
    opt = optim.Adam(net.parameters(), lr=1e-3)
    for p in net.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    gen = np.random.Generator(np.random.PCG64(123))
    obj = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
           "rng": gen.bit_generator.state, "metrics": [{"acc": 98.5, "nan": float("nan")}],
           "none": None, "tuple": (1, "a"), "__weird": {1: "x"}}
    path = tmp_path / "ckpt.npz"
    nn.save(obj, path)
    back = nn.load(path)
    assert list(back["model"]) == list(obj["model"])
    for k, v in obj["model"].items():
        assert back["model"][k].dtype == v.dtype
        np.testing.assert_array_equal(back["model"][k], v)
    assert back["epoch"] == 3 and back["none"] is None and back["tuple"] == (1, "a")
    assert back["__weird"] == {1: "x"}
    assert np.isnan(back["metrics"][0]["nan"]) and back["metrics"][0]["acc"] == 98.5
    assert back["rng"] == obj["rng"]                                     # 128-bit ints intact
    assert sorted(back["optimizer"]["state"]) == list(range(8))
    opt2 = optim.Adam(mnist_net().parameters())
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    with np.load(path) as raw:                                           # plain numpy reads it
        np.testing.assert_array_equal(raw["model/0.weight"], obj["model"]["0.weight"])



def test_save_keeps_0d_arrays_and_honours_the_umask(tmp_path):
    from fastconv import optim
    path = tmp_path / "state.npz"
    old = os.umask(0o027)
    try:
        nn.save({"step": np.array(5.0), "w": np.ones(2)}, path)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640
    back = nn.load(path)
    assert back["step"].shape == () and back["step"] == 5.0
    # an optimizer state with 0-d entries (as converted from PyTorch) survives the round trip
    p = nn.Parameter(np.ones(3))
    state = {"state": {0: {"step": np.array(2.0), "exp_avg": np.zeros(3),
                           "exp_avg_sq": np.zeros(3)}},
             "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                               "weight_decay": 0, "amsgrad": False, "params": [0]}]}
    nn.save(state, path)
    optim.Adam([p]).load_state_dict(nn.load(path))

def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    nn.save({"a": np.arange(3)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot store"):
        nn.save({"a": np.arange(3), "bad": object()}, path)
    assert path.read_bytes() == before

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        nn.save({"a": np.arange(5)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]     # no temp files left
    monkeypatch.undo()
    assert nn.load(path)["a"].tolist() == [0, 1, 2]


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz"):
        nn.load(bad)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(2))
    assert nn.load(plain)["w"].tolist() == [1.0, 1.0]


# -- docstring examples -----------------------------------------------------------------------
@pytest.mark.parametrize("module", ["fastconv.nn", "fastconv.nn.module", "fastconv.nn.layers",
                                    "fastconv.nn.functional", "fastconv.nn.losses",
                                    "fastconv.nn.init", "fastconv.nn.io", "fastconv.optim",
                                    "fastconv.datasets"])
def test_docstring_examples(module):
    import importlib
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5), (8, 40, 3300), (1, 1, 1 << 20)])
def test_bias_gradient_channel_sums_match_float64(shape, dtype):
    """Conv2d's bias gradient (cpu/nn_act.channel_sums: parallel, float64 accumulation on
    large arrays) against a float64 sum; NaN reaches its channel only."""
    g = np.random.default_rng(shape[2]).standard_normal(shape).astype(dtype)
    want = g.astype(np.float64).sum(axis=(0, 2))
    got = nn_act.channel_sums(g)
    assert got.dtype == dtype and got.shape == (shape[1],)
    np.testing.assert_allclose(got, want, rtol=0, atol=(1e-5 if dtype == np.float32 else 1e-12)
                               * np.sqrt(shape[0] * shape[2]))
    g[0, -1, -1] = np.nan
    got = nn_act.channel_sums(g)
    assert np.isnan(got[-1]) and np.isfinite(got[:-1]).all()
