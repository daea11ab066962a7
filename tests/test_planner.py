"""One planner: every op on the CPU chooses through ``dispatch.plan`` (the public
functions, the layers and Dask chunks alike), ``auto`` runs what ``choose_algorithm(op=)``
says, and the non-finite rule is the planner's, so the layers follow it too."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import dispatch, nn

from conftest import cpu_candidates

SHAPES = [  # (x_shape, w_shape, kwargs)
    ((2, 3, 12, 11), (4, 3, 3, 3), dict(padding=1)),
    ((1, 1, 40, 40), (1, 1, 15, 15), dict(padding=7)),
    ((2, 4, 9, 9), (4, 2, 3, 3), dict(stride=2, groups=2, dilation=1)),
]


def _run_op(op, x, w, algorithm, **kw):
    if op == "forward":
        return fc.conv2d(x, w, algorithm=algorithm, **kw)
    y = fc.conv2d(x, w, algorithm="direct", **kw)
    gy = np.ones_like(y)
    if op == "input_grad":
        return fc.grad.conv2d_input(x.shape, w, gy, algorithm=algorithm, **kw)
    return fc.grad.conv2d_weight(x, w.shape, gy, algorithm=algorithm, **kw)


@pytest.mark.parametrize("op", dispatch.OPS)
@pytest.mark.parametrize("algorithm", dispatch.ALGORITHM_NAMES)
@pytest.mark.parametrize("x_shape,w_shape,kw", SHAPES)
def test_every_op_and_algorithm_goes_through_the_planner(plans, op, algorithm, x_shape,
                                                         w_shape, kw, rng):
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    if algorithm != "auto" and algorithm not in cpu_candidates(x_shape, w_shape, **kw):
        with pytest.raises(ValueError, match=f"algorithm='{algorithm}' cannot run"):
            _run_op(op, x, w, algorithm, **kw)         # a shape-limited algorithm says so
        return
    _run_op(op, x, w, algorithm, **kw)
    ours = [c for c in plans if c[0] == op]
    assert ours, f"{op} ran without dispatch.plan"
    got_op, device, asked, ran, _ = ours[-1]
    assert (device, asked) == ("cpu", algorithm)
    want = (fc.choose_algorithm(x_shape, w_shape, dtype=np.float32, op=op, **kw).algorithm
            if algorithm == "auto" else algorithm)
    assert ran == want


def test_registry_entries_are_complete():
    for name, entry in dispatch.REGISTRY.items():
        assert entry.name == name and name in dispatch.ALGORITHM_NAMES
        for op in dispatch.OPS:
            assert callable(getattr(entry.cpu_kernels, op))
        assert set(entry.rtol) >= set(entry.devices)
        assert set(entry.reasons) >= set(entry.devices)


@pytest.mark.parametrize("op", dispatch.OPS)
def test_choose_algorithm_per_op(op):
    c = fc.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1, op=op)
    assert set(c.estimates) == set(cpu_candidates((8, 64, 56, 56), (64, 64, 3, 3), padding=1))
    assert all(v > 0 for v in c.estimates.values())
    assert c.algorithm == min(c.estimates, key=c.estimates.get)
    words = {"forward": None, "input_grad": "input gradient", "weight_grad": "weight gradient"}
    if words[op]:
        assert words[op] in c.reason
    with pytest.raises(ValueError, match="op must be one of"):
        fc.choose_algorithm((1, 1, 5, 5), (1, 1, 3, 3), op="backward")


@pytest.mark.parametrize("op", dispatch.OPS)
@pytest.mark.parametrize("x_shape,w_shape,kw", SHAPES)
def test_cpu_cost_model_is_per_op(op, x_shape, w_shape, kw):
    """Every CPU entry has features and fitted constants of its own for each op; the
    estimate is their product, summed (no forward cost scaled by a factor)."""
    from fastconv._arrays import proxy
    from fastconv._validate import conv_spec
    spec, *_ = conv_spec("t", 2, proxy(x_shape, np.float32), proxy(w_shape, np.float32), None,
                         kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1),
                         kw.get("groups", 1), "zeros")
    est = dispatch.estimate(spec, op)
    for entry in dispatch.candidates(spec, "cpu"):
        name = entry.name
        if op in entry.delegate:                 # another entry's kernel and costs
            assert est[name] == est[entry.delegate[op]]
            continue
        feats = entry.cpu_features(spec, op)
        model = dispatch._MODEL[name][op]
        assert feats and all(v >= 0 for v in feats.values())
        assert set(feats) <= set(model), f"{name} {op}: features without a constant"
        assert est[name] == pytest.approx(sum(model[k] * v for k, v in feats.items()))
        assert est[name] > 0


def _cpu_spec(x_shape, w_shape, dtype=np.float32, stride=1, padding=0, groups=1):
    from fastconv._arrays import proxy
    from fastconv._validate import conv_spec
    spec, *_ = conv_spec("t", 2, proxy(x_shape, dtype), proxy(w_shape, dtype), None, stride,
                         padding, 1, groups, "zeros")
    return spec


def test_depthwise_costs_count_the_stencil_and_winograds_tasks():
    """Unit-stride depthwise layers whose planes do not fit the channel-lane kernels'
    task buffer run the one-channel stencil (cpu/stencil.py): the direct estimate counts
    its vector multiply-adds (below half a tile: the scalar definition's), its planes and
    the padded input it reads. The others, and strided ones, run channels in the lanes
    (cpu/depthwise.py): its tiles' vector multiply-adds (rows covered by tiles of 8, 4,
    2, 1 positions), the bytes it transposes, its tasks. Winograd counts its tasks'
    GEMM batches (groups x panels of tiles x alpha^2): a depthwise layer has C times
    those of a dense layer of the same size."""
    from fastconv.cpu import depthwise, stencil, winograd
    lanes = stencil.lanes(4)
    W = int((depthwise.MAX_BUFFER_BYTES // (depthwise.lanes(4) * 4)) ** 0.5) + 2   # no room
    f = dispatch.direct_features(_cpu_spec((1, 8, W, W), (8, 1, 3, 3), padding=1,
                                           groups=8), "forward")
    assert f["stencil_plane"] == 8 and f["stencil_scalar_mac"] == 0
    assert f["stencil_mac"] == 8 * W * -(-W // lanes) * 9
    assert f["stencil_byte"] == 8 * (W + 2) ** 2 * 4 and "line" not in f
    tall = depthwise.MAX_BUFFER_BYTES // (depthwise.lanes(4) * 4 * 9) + 1     # no room
    few = dispatch.direct_features(_cpu_spec((1, 4, tall, 7), (4, 1, 3, 3), padding=1,
                                             groups=4), "forward")
    assert few["stencil_mac"] == 0 and few["stencil_scalar_mac"] == 4 * tall * 7 * 9
    L = depthwise.lanes(4)
    tasks = 8 * -(-64 // L)
    small = dispatch.direct_features(_cpu_spec((8, 64, 7, 7), (64, 1, 3, 3), padding=1,
                                               groups=64), "forward")
    assert "stencil_plane" not in small and small["dwlane_task"] == tasks
    assert small["dwlane_mac"] == tasks * 7 * 8 * 9                   # a tile of 8 per row
    assert small["dwlane_byte"] == 8 * 64 * (9 * 9 + 7 * 7) * 4
    strided = dispatch.direct_features(_cpu_spec((8, 64, 28, 28), (64, 1, 3, 3), stride=2,
                                                 padding=1, groups=64), "forward")
    assert "stencil_plane" not in strided and strided["dwlane_mac"] == tasks * 14 * 16 * 9
    spec = _cpu_spec((8, 64, 28, 28), (64, 1, 3, 3), padding=1, groups=64)
    dense = _cpu_spec((8, 64, 28, 28), (64, 64, 3, 3), padding=1)
    for m, feats in ((4, dispatch.winograd_features), (2, dispatch.winograd_f2_features)):
        tiles = 8 * (-(-28 // m)) ** 2
        panels = -(-tiles // winograd.PANEL)
        assert feats(spec)["group_panel"] == 64 * panels * (m + 2) ** 2
        assert feats(dense)["group_panel"] == panels * (m + 2) ** 2


@pytest.mark.parametrize("x_shape,w_shape,kw", [
    ((2, 4, 9, 9), (4, 1, 3, 3), {"padding": 1, "groups": 4}),
    ((2, 4, 9, 9), (4, 1, 1, 1), {"groups": 4}),
    ((2, 4, 9, 9), (4, 1, 3, 3), {"stride": 2, "padding": 1, "groups": 4}),
    ((2, 4, 9, 9), (4, 1, 2, 3), {"stride": (1, 2), "groups": 4}),
    ((2, 4, 3, 9, 9), (4, 1, 1, 3, 3), {"padding": 1, "groups": 4}),
    ((2, 4, 1, 9, 9), (4, 1, 1, 3, 3), {"padding": (0, 1, 1), "groups": 4}),
    ((2, 4, 9, 9), (8, 2, 3, 3), {"padding": 1, "groups": 2}),
])
@pytest.mark.parametrize("op", ["forward", "input_grad"])
def test_direct_estimate_counts_the_stencil_where_it_runs(op, x_shape, w_shape, kw,
                                                          monkeypatch, rng):
    """The direct estimate counts the stencil's work exactly where the engine runs the
    stencil (forward, and each phase of the input gradient): recorded by wrapping the
    kernel, over depthwise 2-D/3-D layers of 1x1, 3x3 and 2x3 kernels, strides 1 and 2,
    and a grouped layer."""
    from fastconv.cpu import direct
    calls = []
    real = direct.stencil2d
    monkeypatch.setattr(direct, "stencil2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    nd = len(x_shape) - 2
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    conv = fc.conv2d if nd == 2 else fc.conv3d
    y = conv(x, w, algorithm="direct", **kw)
    if op == "input_grad":
        calls.clear()
        grad = fc.grad.conv2d_input if nd == 2 else fc.grad.conv3d_input
        grad(x.shape, w, np.ones_like(y), algorithm="direct", **kw)
    spec = _cpu_spec(x_shape, w_shape, **kw) if nd == 2 else None
    if spec is None:
        from fastconv._arrays import proxy
        from fastconv._validate import conv_spec
        spec, *_ = conv_spec("t", 3, proxy(x_shape, np.float32), proxy(w_shape, np.float32),
                             None, kw.get("stride", 1), kw.get("padding", 0), 1,
                             kw.get("groups", 1), "zeros")
    feats = dispatch.direct_features(spec, op)
    assert ("stencil_plane" in feats) == bool(calls), (feats, len(calls))


@pytest.mark.parametrize("hosts, read", [
    ({"avx512": {"direct": {"forward": {"line": 1.0}}},
      "avx2": {"direct": {"forward": {"line": 2.0}}}}, "here"),
    ({"other": {"direct": {"forward": {"line": 3.0}}}}, "other"),
    ({}, None),
    ({"unknown": {"direct": {"forward": {"line": 4.0}}}}, None),
])
def test_cost_model_section_per_host_class(tmp_path, monkeypatch, hosts, read):
    """cost_model.json holds one model per host class (the vector width the kernels
    are built for); the planner reads its own host's, else the nearest there is, else
    the built-in defaults."""
    import json
    here = dispatch.HOST_CLASS
    if read == "other":          # the other x86 class's section, and an empty one of ours
        other = "avx2" if here == "avx512" else "avx512"
        hosts = {here: {}, other: hosts["other"]}
    if read == "here":           # this host's section second in the file, after the other's
        hosts = {cls: hosts["avx512" if cls == here else "avx2"]
                 for cls in sorted(hosts, key=lambda c: c == here)}
    path = tmp_path / "cost_model.json"
    path.write_text(json.dumps({"_comment": "t", "hosts": hosts}))
    monkeypatch.setattr(dispatch, "_MODEL_FILE", path)
    line = dispatch._load_model()["direct"]["forward"]["line"]
    expect = {"here": 1.0, "other": 3.0, None: dispatch._DEFAULT_MODEL["direct"]["forward"]["line"]}
    assert line == expect[read]
    other = "avx2" if here == "avx512" else "avx512"
    assert dispatch._model_section(json.loads(path.read_text()))[0] == \
        {"here": here, "other": other, None: None}[read]


@pytest.mark.parametrize("x_shape,w_shape,kw", SHAPES)
def test_conv2d_layer_picks_what_choose_algorithm_picks(plans, x_shape, w_shape, kw, rng):
    layer = nn.Conv2d(x_shape[1], w_shape[0], w_shape[2:], groups=kw.get("groups", 1),
                      stride=kw.get("stride", 1), padding=kw.get("padding", 0))
    x = rng.standard_normal(x_shape).astype(np.float32)
    y = layer(x)
    layer.backward(np.ones_like(y))
    seen = {c[0]: c[3] for c in plans}
    assert set(seen) == set(dispatch.OPS)
    for op in dispatch.OPS:
        want = fc.choose_algorithm(x_shape, layer.weight.shape, dtype=np.float32, op=op,
                                   **kw).algorithm
        assert seen[op] == want, op


def _nan_case(rng):
    """A shape where auto's cost model picks fft for the forward, with one NaN pixel."""
    x = rng.random((1, 2, 48, 48)).astype(np.float32)
    w = rng.uniform(-0.1, 0.1, (1, 2, 17, 17)).astype(np.float32)
    x[0, 0, 10, 10] = np.nan
    return x, w


def test_nonfinite_rule_is_the_planners_for_functions_and_layers(rng):
    x, w = _nan_case(rng)
    entry = dispatch.REGISTRY[fc.choose_algorithm(x.shape, w.shape).algorithm]
    want = fc.conv2d(x, w, algorithm="direct")
    assert 0 < np.isnan(want).sum() < want.size
    got = fc.conv2d(x, w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    layer = nn.Conv2d(2, 1, 17, bias=False)
    layer.weight.data[...] = w
    y = layer(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    layer.backward(np.ones_like(y))
    gw_want = fc.grad.conv2d_weight(x, w.shape, np.ones_like(want), algorithm="direct")
    np.testing.assert_array_equal(np.isnan(layer.weight.grad), np.isnan(gw_want))
    if "cpu" in entry.spreads_nonfinite:        # the rule had to act: show it did
        assert entry.name == "fft"
