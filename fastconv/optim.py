"""Optimisers with ``torch.optim``'s update rules: :class:`SGD` and :class:`Adam`.

They update ``Parameter.data`` in place from ``Parameter.grad`` (parameters without a
gradient are skipped, as in PyTorch). ``state_dict()`` has PyTorch's layout:
``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``.

Parameters on the GPU (``model.to("cuda")``) are updated in place by small numba.cuda
kernels (:func:`fastconv.cuda.nn_ops.sgd_step` / ``adam_step``), with their state
(momentum buffers, moments) kept on the device; ``state_dict()`` still returns host
arrays and ``load_state_dict`` copies the state onto the parameters' device:

>>> from fastconv import nn, optim                          # doctest: +SKIP
>>> model = nn.Linear(3, 2).to("cuda")                      # doctest: +SKIP
>>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)   # doctest: +SKIP
>>> # ... model.backward(...) fills the .grad device arrays, then:
>>> opt.step()                                              # doctest: +SKIP
"""
from __future__ import annotations

import copy
import math
import numbers

import numpy as np

from ._arrays import is_gpu_array
from .cpu import nn_act
from .nn.module import Parameter, host_copy, zero_

__all__ = ["Optimizer", "SGD", "Adam"]


def _check_number(fn, name, value, low=0.0, high=None, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{fn}: invalid {name}: {value!r} (expected a finite number)")
    bad_low = value <= low if low_open else value < low
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "(" if low_open else "["
        hi = "" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ValueError(f"{fn}: invalid {name}: {value} (must be in {lo}{low}, {hi or 'inf)'}")
    return float(value)


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad`` and state dicts.

    Parameters
    ----------
    params : iterable of Parameter, or of dicts ``{"params": [...], **options}``
    defaults : dict
        Default options for the groups.

    Examples
    --------
    >>> from fastconv import nn, optim
    >>> class Sign(optim.Optimizer):                 # a minimal optimiser: p -= lr * sign(g)
    ...     def __init__(self, params, lr=0.1):
    ...         super().__init__(params, dict(lr=lr))
    ...     def step(self):
    ...         for group, p, state in self._params_with_grad():
    ...             p.data -= group["lr"] * (p.grad > 0) - group["lr"] * (p.grad < 0)
    >>> p = nn.Parameter([1.0, 1.0])
    >>> p.grad = p.data * [2, -3]
    >>> opt = Sign([p])
    >>> opt.step()
    >>> p.data
    array([0.9, 1.1], dtype=float32)
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}                   # id(Parameter) -> dict
        self.param_groups = []
        if isinstance(params, Parameter):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters "
                            f"(e.g. model.parameters()), got a single Parameter")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group):
        """Add a dict ``{"params": [...], **options}``; missing options take the defaults."""
        fn = type(self).__name__
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{fn}: a parameter group must be a dict with a 'params' entry")
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{fn}: can only optimise fastconv.nn.Parameter objects, got "
                                f"{type(p).__name__}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{fn}: a parameter appears in more than one group (or twice)")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{fn}: unknown option(s) {sorted(unknown)}; accepted: "
                             f"{sorted(self.defaults)}")
        g = dict(self.defaults)
        g.update({k: v for k, v in group.items() if k != "params"})
        self._check_group(g)
        g["params"] = params
        self.param_groups.append(g)

    def _check_group(self, group):
        """Validate one group's options (subclasses)."""

    def zero_grad(self, set_to_none=True):
        """Clear the gradients (to None, as PyTorch does by default, or to zeros)."""
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    zero_(p.grad)

    def _params_with_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None and p.requires_grad:
                    yield g, p, self.state.setdefault(id(p), {})

    def step(self):
        raise NotImplementedError

    # state dicts -------------------------------------------------------------------------
    def state_dict(self):
        """``{"state": {index: {name: value}}, "param_groups": [...]}`` (copies), PyTorch's
        layout; parameters are numbered in group order. Arrays are host (numpy) copies,
        also for parameters on the GPU.

        Examples
        --------
        >>> from fastconv import nn, optim
        >>> opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
        >>> opt.state_dict()["param_groups"][0]["params"]
        [0, 1]
        """
        index = {}
        groups = []
        for g in self.param_groups:
            d = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            d["params"] = []
            for p in g["params"]:
                index[id(p)] = len(index)
                d["params"].append(index[id(p)])
            groups.append(d)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state.get(id(p))
                if s:
                    state[index[id(p)]] = {
                        k: (host_copy(v) if isinstance(v, np.ndarray) or is_gpu_array(v) else v)
                        for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` (of an optimiser over the same parameter shapes);
        array state goes onto each parameter's device.

        Raises
        ------
        ValueError
            The groups or parameter shapes do not match.
        """
        fn = f"{type(self).__name__}.load_state_dict"
        try:
            groups = state_dict["param_groups"]
            states = state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError(f"{fn}: expected a dict with 'state' and 'param_groups'") from None
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{fn}: the state dict has {len(groups)} parameter group(s), this "
                             f"optimiser {len(self.param_groups)}")
        by_index = {}
        for saved, g in zip(groups, self.param_groups):
            if len(saved["params"]) != len(g["params"]):
                raise ValueError(f"{fn}: a parameter group has {len(saved['params'])} parameters "
                                 f"in the state dict but {len(g['params'])} here")
            for i, p in zip(saved["params"], g["params"]):
                by_index[int(i)] = p
        new_state = {}
        for i, s in states.items():
            p = by_index.get(int(i))
            if p is None:
                raise ValueError(f"{fn}: state for unknown parameter index {i}")
            ps = {}
            on_gpu = is_gpu_array(p.data)
            for k, v in s.items():
                if is_gpu_array(v):
                    v = host_copy(v)
                if isinstance(v, np.ndarray) and (v.ndim > 0 or p.data.ndim == 0):
                    if v.shape != tuple(p.shape):
                        raise ValueError(f"{fn}: state {k!r} of parameter {i} has shape {v.shape}, "
                                         f"the parameter {tuple(p.shape)}")
                    v = np.array(v, dtype=p.dtype, copy=True)
                    if on_gpu:
                        v = _gpu_state(v)
                elif isinstance(v, np.ndarray):
                    v = v.item()
                ps[k] = v
            new_state[id(p)] = ps
        for saved, g in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    g[k] = tuple(v) if isinstance(v, list) and k == "betas" else copy.deepcopy(v)
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _fused_ok(p, buf):
    """Whether SGD's one-pass kernel can update ``p``: C-contiguous float arrays of one dtype
    and shape (else the NumPy formulation, which it reproduces, runs)."""
    data, grad = p.data, p.grad
    return (data.dtype.char in "fd" and data.flags.c_contiguous and data.flags.writeable
            and type(grad) is np.ndarray and grad.dtype == data.dtype
            and grad.shape == data.shape and grad.flags.c_contiguous
            and (buf is None or (type(buf) is np.ndarray and buf.dtype == data.dtype
                                 and buf.shape == data.shape and buf.flags.c_contiguous)))


def _gpu_state(a):
    """A device copy of host state (momentum buffers, moments) for a parameter on the GPU."""
    from .cuda import runtime as rt
    return rt.as_device(a) if is_gpu_array(a) else rt.to_device(a)


def _gpu_buffers(state, names, like):
    """State arrays ``names`` of a GPU parameter, on the device: created as zeros, or
    moved there once when they are host arrays (e.g. restored before ``model.to('cuda')``)."""
    from .cuda import nn_ops
    out = []
    for name in names:
        buf = state.get(name)
        if buf is None:
            buf = nn_ops.zeros(tuple(like.shape), like.dtype)
            state[name] = buf
        elif not is_gpu_array(buf):
            buf = _gpu_state(np.ascontiguousarray(buf, dtype=like.dtype))
            state[name] = buf
        out.append(buf)
    return out


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (``torch.optim.SGD``'s rule).

    With ``g`` the gradient (plus ``weight_decay * p``), the momentum buffer is
    ``b = g`` on the first step, then ``b = momentum * b + (1 - dampening) * g``; the
    update uses ``g + momentum * b`` (nesterov) or ``b``: ``p -= lr * update``.

    Parameters
    ----------
    params : iterable of Parameter (or of parameter-group dicts)
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> p = nn.Parameter(np.array([1.0]))
    >>> opt = optim.SGD([p], lr=0.1, momentum=0.5)
    >>> for _ in range(2):
    ...     p.grad = np.array([1.0])
    ...     opt.step()
    >>> p.data            # 1 - 0.1 * 1 - 0.1 * 1.5
    array([0.75])
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, g):
        fn = "SGD"
        g["lr"] = _check_number(fn, "learning rate lr", g["lr"])
        g["momentum"] = _check_number(fn, "momentum", g["momentum"])
        g["dampening"] = _check_number(fn, "dampening", g["dampening"])
        g["weight_decay"] = _check_number(fn, "weight_decay", g["weight_decay"])
        g["nesterov"] = bool(g["nesterov"])
        g["maximize"] = bool(g["maximize"])
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and zero dampening, "
                             f"got momentum={g['momentum']}, dampening={g['dampening']}")

    def step(self):
        """One update of every parameter that has a gradient (on the GPU for parameters
        there, see :meth:`fastconv.nn.Module.to` and the module's GPU example)."""
        scalars = {}                  # (group, dtype) -> the kernel's scalars, once per step
        for g, p, state in self._params_with_grad():
            if not isinstance(p.data, np.ndarray):
                self._step_gpu(g, p, state)
                continue
            lr, mom, damp, wd = g["lr"], g["momentum"], g["dampening"], g["weight_decay"]
            buf = state.get("momentum_buffer")
            if _fused_ok(p, buf if mom != 0 else None):
                key = (id(g), p.data.dtype.char)
                sc = scalars.get(key)
                if sc is None:
                    sc = scalars[key] = nn_act.sgd_scalars(p.data.dtype, lr, wd, mom, damp,
                                                           g["nesterov"], g["maximize"])
                first = mom != 0 and buf is None
                if first:
                    buf = state["momentum_buffer"] = np.empty_like(p.data)
                nn_act.sgd_update(p.data, p.grad, buf, sc, first)
                continue
            d = p.grad if not g["maximize"] else -p.grad
            if wd != 0:
                d = d + wd * p.data
            if mom != 0:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = np.array(d, dtype=p.dtype, copy=True)
                    state["momentum_buffer"] = buf
                else:
                    buf *= mom
                    if damp == 0:
                        buf += d
                    else:
                        buf += (1 - damp) * d
                d = d + mom * buf if g["nesterov"] else buf
            if lr == 1:
                p.data -= d
            else:
                p.data -= (lr * d).astype(p.dtype, copy=False)

    def _step_gpu(self, g, p, state):
        from .cuda import nn_ops
        mom = g["momentum"]
        first = False
        buf = p.grad                                # unused by the kernel without momentum
        if mom != 0:
            first = state.get("momentum_buffer") is None
            buf, = _gpu_buffers(state, ("momentum_buffer",), p.data)
        nn_ops.sgd_step(p.data, p.grad, buf, g["lr"], mom, g["dampening"], g["weight_decay"],
                        g["nesterov"], first, maximize=g["maximize"])


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``'s rule, optionally AMSGrad).

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, with ``g`` the
    gradient plus ``weight_decay * p`` (L2, not decoupled).

    Parameters
    ----------
    params : iterable of Parameter (or of parameter-group dicts)
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    amsgrad : bool, default False
    maximize : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> w = nn.Parameter(np.array([1.0, -1.0]))
    >>> opt = optim.Adam([w], lr=0.1)
    >>> w.grad = np.array([0.5, -2.0])
    >>> opt.step()
    >>> w.data.round(6)        # the first Adam step moves each entry by lr, whatever |grad|
    array([ 0.9, -0.9])
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, g):
        fn = "Adam"
        g["lr"] = _check_number(fn, "learning rate lr", g["lr"])
        g["eps"] = _check_number(fn, "epsilon eps", g["eps"])
        g["weight_decay"] = _check_number(fn, "weight_decay", g["weight_decay"])
        betas = g["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{fn}: betas must be a pair (beta1, beta2), got {betas!r}")
        g["betas"] = tuple(_check_number(fn, f"beta parameter at index {i}", b, 0.0, 1.0,
                                         high_open=True) for i, b in enumerate(betas))
        g["amsgrad"] = bool(g["amsgrad"])
        g["maximize"] = bool(g["maximize"])

    def step(self):
        """One Adam update of every parameter that has a gradient (on the GPU for
        parameters there, see the module's GPU example)."""
        for g, p, state in self._params_with_grad():
            if not isinstance(p.data, np.ndarray):
                self._step_gpu(g, p, state)
                continue
            beta1, beta2 = g["betas"]
            lr, eps, wd = g["lr"], g["eps"], g["weight_decay"]
            grad = p.grad if not g["maximize"] else -p.grad
            if wd != 0:
                grad = grad + wd * p.data
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
                if g["amsgrad"]:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m += (grad - m) * (1 - beta1)                 # torch: exp_avg.lerp_(grad, 1 - beta1)
            v *= beta2
            v += (1 - beta2) * grad * grad
            bc1 = 1 - beta1 ** t
            bc2_sqrt = math.sqrt(1 - beta2 ** t)
            if g["amsgrad"]:
                vmax = state.setdefault("max_exp_avg_sq", np.zeros_like(p.data))
                np.maximum(vmax, v, out=vmax)
                denom = np.sqrt(vmax) / bc2_sqrt + eps
            else:
                denom = np.sqrt(v) / bc2_sqrt + eps
            p.data -= ((lr / bc1) * m / denom).astype(p.dtype, copy=False)

    def _step_gpu(self, g, p, state):
        from .cuda import nn_ops
        state["step"] = state.get("step", 0) + 1
        names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if g["amsgrad"] else ())
        bufs = _gpu_buffers(state, names, p.data)
        nn_ops.adam_step(p.data, p.grad, bufs[0], bufs[1], state["step"], lr=g["lr"],
                         betas=g["betas"], eps=g["eps"], weight_decay=g["weight_decay"],
                         amsgrad=g["amsgrad"], vmax=bufs[2] if g["amsgrad"] else None,
                         maximize=g["maximize"])
