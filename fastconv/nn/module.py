"""``Parameter``, the ``Module`` base class, ``Sequential`` and the layers' random generator.

There is no autograd tape: every module's ``forward`` keeps what its ``backward`` needs
(in train mode), and ``backward(grad_output)`` returns the gradient with respect to the
input and adds the parameter gradients into ``Parameter.grad`` (accumulating, as in
PyTorch, until ``zero_grad()``).
"""
from __future__ import annotations

import numbers
from collections import OrderedDict

import numpy as np

from .._arrays import is_gpu_array

DEVICES = ("cpu", "cuda")


# -- devices -------------------------------------------------------------------------------
# GPU arrays are handled by fastconv.cuda, imported only when one is seen (or on
# .to("cuda")), so a CPU-only install never imports numba.cuda.
def _cuda_runtime():
    from ..cuda import runtime as rt
    return rt


def on_gpu(a) -> bool:
    """Whether ``a`` is a GPU array (numpy arrays are answered by one type check: the
    layers call this on every forward and backward)."""
    return type(a) is not np.ndarray and is_gpu_array(a)


def to_host(a):
    """A host copy of a GPU array (numpy arrays and other values: returned as they are)."""
    if is_gpu_array(a):
        return _cuda_runtime().as_device(a).copy_to_host()
    return a


def host_copy(a):
    """A fresh numpy copy of a host or GPU array (what state dicts hold)."""
    return to_host(a) if is_gpu_array(a) else np.array(a, copy=True)


def zero_(a):
    """Set every element of a host or GPU array to 0, in place."""
    if is_gpu_array(a):
        from ..cuda import array_kernel
        rt = _cuda_runtime()
        array_kernel.fill(rt.flat(rt.as_device(a)), 0)
    else:
        a[...] = 0
    return a


def _device_mover(device, fn):
    """A function moving one array to ``device`` (no copy when it is already there)."""
    if device == "cuda":
        rt = _cuda_runtime()
        rt.require(fn)
        return lambda a: rt.as_device(a) if is_gpu_array(a) else rt.to_device(a)
    return lambda a: to_host(a)


# -- random numbers ----------------------------------------------------------------------
# Like PyTorch, layers draw from one global generator with a fixed default seed, so a
# script is reproducible unless it asks otherwise; pass rng= for independent streams.
_DEFAULT_SEED = 67280421310721


def _new_generator(seed):
    return np.random.Generator(np.random.PCG64(seed))


_generator = _new_generator(_DEFAULT_SEED)


def manual_seed(seed):
    """Reseed the global generator the layers draw from (initialisation, dropout).

    Parameters
    ----------
    seed : int

    Returns
    -------
    numpy.random.Generator
        The new global generator.

    Examples
    --------
    >>> from fastconv import nn
    >>> _ = nn.manual_seed(0)
    >>> a = nn.Linear(3, 2).weight.data
    >>> _ = nn.manual_seed(0)
    >>> bool((nn.Linear(3, 2).weight.data == a).all())
    True
    """
    global _generator
    if not isinstance(seed, (numbers.Integral, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {seed!r}")
    _generator = _new_generator(int(seed))
    return _generator


def default_generator():
    """The global ``numpy.random.Generator`` used when a layer gets no ``rng``.

    Examples
    --------
    >>> from fastconv import nn
    >>> type(nn.default_generator()).__name__
    'Generator'
    """
    return _generator


def get_rng_state():
    """The global generator's state (a dict; store it to resume a run exactly).

    Examples
    --------
    >>> from fastconv import nn
    >>> state = nn.get_rng_state()
    >>> x = nn.default_generator().random()
    >>> nn.set_rng_state(state)
    >>> nn.default_generator().random() == x
    True
    """
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state returned by :func:`get_rng_state`.

    Examples
    --------
    >>> from fastconv import nn
    >>> state = nn.get_rng_state()
    >>> a = nn.Linear(2, 2).weight.data
    >>> nn.set_rng_state(state)
    >>> bool((nn.Linear(2, 2).weight.data == a).all())
    True
    """
    _generator.bit_generator.state = state


def as_generator(rng, fn="rng"):
    """None -> the global generator, an int -> a new seeded generator, a Generator as is."""
    if rng is None:
        return _generator
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool):
        return _new_generator(int(rng))
    raise TypeError(f"{fn}: rng must be None, an int seed or a numpy.random.Generator, "
                    f"got {type(rng).__name__}")


def check_float_dtype(dtype, fn):
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"{fn}: dtype must be float32 or float64, got {dt}")
    return dt


# -- Parameter ---------------------------------------------------------------------------
class Parameter:
    """A trainable array: ``.data`` (ndarray) and ``.grad`` (ndarray or None).

    After ``module.to("cuda")``, ``.data`` and ``.grad`` are numba device arrays.

    Parameters
    ----------
    data : array_like
        The initial value, copied: float32 unless it already is a float64 ndarray.
    requires_grad : bool, default True
        False freezes it: layers then skip its gradient and optimisers its update.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> p = nn.Parameter(np.zeros(3))
    >>> p.shape, p.dtype.name, p.grad is None
    ((3,), 'float64', True)
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad=True):
        keep64 = isinstance(data, np.ndarray) and data.dtype == np.float64
        self.data = np.array(data, dtype=np.float64 if keep64 else np.float32, copy=True,
                             order="C")
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        """``"cuda"`` when ``.data`` is a GPU array, else ``"cpu"``.

        Examples
        --------
        >>> from fastconv import nn
        >>> nn.Linear(2, 2).weight.device
        'cpu'
        """
        return "cuda" if is_gpu_array(self.data) else "cpu"

    def accumulate(self, grad):
        """Add ``grad`` into ``.grad`` (creating it on first use), as PyTorch accumulates."""
        if on_gpu(grad):
            return self._accumulate_gpu(grad)
        if self.grad is None:          # a copy: later accumulations must not write into grad
            self.grad = np.array(grad, dtype=self.data.dtype, copy=True,
                                 order="C").reshape(self.data.shape)
        else:
            self.grad += grad.reshape(self.data.shape)

    def _accumulate_gpu(self, grad):
        from ..cuda import nn_ops
        rt = _cuda_runtime()
        g = rt.as_device(grad)
        if tuple(g.shape) != tuple(self.data.shape):
            g = rt.reshape(g, self.data.shape)
        if self.grad is None:
            if np.dtype(g.dtype) != np.dtype(self.data.dtype) or not rt.contiguous(g):
                g = rt.to_device(g.copy_to_host(), self.data.dtype)
            self.grad = g            # layers hand over freshly allocated gradients
        else:
            nn_ops.axpy(self.grad, 1.0, g)

    def __array__(self, dtype=None, copy=None):
        data = to_host(self.data)
        return data if dtype is None else data.astype(dtype)

    def __repr__(self):
        return f"Parameter containing:\n{self.data!r}"


# -- Module ------------------------------------------------------------------------------
def _addindent(s, n):
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    return lines[0] + "\n" + "\n".join(" " * n + line for line in lines[1:])


class Module:
    """Base class of every layer and model.

    Assigning a :class:`Parameter` or a ``Module`` to an attribute registers it, in
    assignment order (that order is :meth:`parameters`' and :meth:`state_dict`'s, as in
    PyTorch). Subclasses implement ``forward(x)`` and ``backward(grad_output)``; calling
    the module runs ``forward``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> class Scale(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.alpha = nn.Parameter(np.ones(1))
    ...     def forward(self, x):
    ...         self.x = x
    ...         return self.alpha.data * x
    ...     def backward(self, grad_output):
    ...         self.alpha.accumulate(np.array([(grad_output * self.x).sum()]))
    ...         return grad_output * self.alpha.data
    >>> m = Scale()
    >>> m(np.array([1., 2.])).tolist()
    [1.0, 2.0]
    >>> m.backward(np.array([1., 1.])).tolist(), m.alpha.grad.tolist()
    ([1.0, 1.0], [3.0])
    >>> list(m.state_dict())
    ['alpha']
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_ctx", {})      # what forward keeps for backward

    # registration --------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attributes")
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._buffers.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._parameters or name in self._modules:
            if value is not None:
                kind = "Parameter" if name in self._parameters else "Module"
                raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__} "
                                f"to {name!r} ({kind} or None expected)")
            (self._parameters if name in self._parameters else self._modules)[name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` (a :class:`Parameter`, or None for an absent one) as ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, "
                            f"got {type(param).__name__}")
        self._modules.pop(name, None)
        self._buffers.pop(name, None)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name, array):
        """Register a non-trainable array (the attribute ``name``) that belongs in
        :meth:`state_dict`."""
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = None          # the attribute holds the value; keep the name
        object.__setattr__(self, name, array)

    def add_module(self, name, module):
        """Register ``module`` as a child called ``name``."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module, got {type(module).__name__}")
        setattr(self, str(name), module)

    # traversal -----------------------------------------------------------------------
    def named_children(self):
        """Yield ``(name, child)`` for the direct submodules."""
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        """Yield the direct submodules."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """Yield ``(name, module)`` for this module and every descendant (depth first)."""
        yield prefix, self
        for name, m in self.named_children():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        """Yield this module and every descendant."""
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        """Yield ``(name, Parameter)`` in PyTorch's order and naming (``"0.weight"``)."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mprefix, m in mods:
            for name, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mprefix}.{name}" if mprefix else name), p

    def parameters(self, recurse=True):
        """Yield the parameters in PyTorch's order (what optimisers take).

        Examples
        --------
        >>> from fastconv import nn
        >>> [p.shape for p in nn.Linear(3, 2).parameters()]
        [(2, 3), (2,)]
        """
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix=""):
        for mprefix, m in self.named_modules(prefix):
            for name in m._buffers:
                value = getattr(m, name)
                if value is not None:
                    yield (f"{mprefix}.{name}" if mprefix else name), value

    # modes -----------------------------------------------------------------------------
    def train(self, mode=True):
        """Set train mode (``mode=True``) or eval mode on this module and its children.

        In train mode ``forward`` keeps what ``backward`` needs and dropout is active.
        Returns the module itself.
        """
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        """Set eval mode (``train(False)``): no cached activations, dropout off."""
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        """Clear every parameter's ``.grad`` (to None, or zeros with ``set_to_none=False``)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                zero_(p.grad)

    def to(self, dtype_or_device):
        """Move every parameter to ``"cpu"`` or ``"cuda"``, or convert it to float32 or
        float64; in place (cached activations are dropped). Returns the module.

        On ``"cuda"`` every ``Parameter.data`` (and ``.grad``, if set) becomes a numba
        device array and the layers run on the GPU when their input is a GPU array;
        ``"cpu"`` copies them back into numpy arrays. Without a usable GPU, ``"cuda"``
        raises a RuntimeError.

        Examples
        --------
        >>> from fastconv import nn
        >>> nn.Linear(2, 2).to("float64").weight.dtype.name
        'float64'
        >>> nn.Linear(2, 2).to("cpu").device
        'cpu'
        >>> nn.Linear(2, 2).to("cuda").weight.data         # doctest: +SKIP
        <numba.cuda.cudadrv.devicearray.DeviceNDArray object at 0x...>
        """
        fn = f"{type(self).__name__}.to"
        if isinstance(dtype_or_device, str) and dtype_or_device in DEVICES:
            return self._to_device(dtype_or_device, fn)
        dt = check_float_dtype(dtype_or_device, fn)
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None and p.data.dtype != dt:
                    device = p.device
                    back = _device_mover(device, fn)
                    p.data = back(to_host(p.data).astype(dt))
                    p.grad = None if p.grad is None else back(to_host(p.grad).astype(dt))
            m._ctx.clear()
            m._dtype_changed(dt)
        return self

    def _to_device(self, device, fn):
        move = _device_mover(device, f"{fn}({device!r})")
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = move(p.data)
                    p.grad = None if p.grad is None else move(p.grad)
            for name in m._buffers:
                value = getattr(m, name)
                if value is not None:
                    object.__setattr__(m, name, move(value if is_gpu_array(value)
                                                     else np.ascontiguousarray(value)))
            m._ctx.clear()
            object.__setattr__(m, "_device", device)
            m._device_changed(device)
        return self

    @property
    def device(self):
        """Where the parameters live: ``"cpu"`` or ``"cuda"`` (see :meth:`to`).

        Examples
        --------
        >>> from fastconv import nn
        >>> nn.Sequential(nn.Linear(2, 2), nn.ReLU()).device
        'cpu'
        """
        for p in self.parameters():
            return p.device
        return self.__dict__.get("_device", "cpu")

    def double(self):
        """``to(float64)``."""
        return self.to(np.float64)

    def float(self):
        """``to(float32)``."""
        return self.to(np.float32)

    def _dtype_changed(self, dtype):
        """Hook for layers that cache dtype-dependent plans."""

    def _device_changed(self, device):
        """Hook for layers that cache device-dependent plans."""

    # state -----------------------------------------------------------------------------
    def state_dict(self):
        """An ordered dict ``name -> ndarray`` (copies) with PyTorch's key names.

        Always host (numpy) arrays, also for a module on ``"cuda"``.

        Examples
        --------
        >>> from fastconv import nn
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> list(model.state_dict())
        ['0.weight', '0.bias', '2.weight', '2.bias']
        """
        out = OrderedDict()
        for mprefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mprefix}.{name}" if mprefix else name] = host_copy(p.data)
            for name in m._buffers:
                value = getattr(m, name)
                if value is not None:
                    out[f"{mprefix}.{name}" if mprefix else name] = host_copy(value)
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays from ``state_dict`` into the parameters (in place, cast to their dtype;
        onto the GPU for a module on ``"cuda"``).

        Parameters
        ----------
        state_dict : mapping of str to array_like
            As returned by :meth:`state_dict` (or a PyTorch model's, converted to numpy).
        strict : bool, default True
            Require exactly the same keys.

        Returns
        -------
        (missing_keys, unexpected_keys) : tuple of lists

        Raises
        ------
        ValueError
            Missing or unexpected keys (when ``strict``), or a shape mismatch.

        Examples
        --------
        >>> from fastconv import nn
        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> b.load_state_dict(a.state_dict())
        ([], [])
        >>> bool((a.weight.data == b.weight.data).all())
        True
        """
        fn = f"{type(self).__name__}.load_state_dict"
        targets = OrderedDict()
        for mprefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    targets[f"{mprefix}.{name}" if mprefix else name] = (m, name, p)
            for name in m._buffers:
                if getattr(m, name) is not None:
                    targets[f"{mprefix}.{name}" if mprefix else name] = (m, name, None)
        keys = list(state_dict.keys())
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in keys if k not in targets]
        if strict and (missing or unexpected):
            raise ValueError(f"{fn}: missing key(s) {missing}, unexpected key(s) {unexpected}; "
                             f"expected keys {list(targets)}")
        for key, (m, name, p) in targets.items():
            if key not in state_dict:
                continue
            value = np.asarray(to_host(state_dict[key]))
            current = p.data if p is not None else getattr(m, name)
            if not is_gpu_array(current):
                current = np.asarray(current)
            if value.shape != tuple(current.shape):
                raise ValueError(f"{fn}: {key!r} has shape {value.shape} in the state dict but "
                                 f"{tuple(current.shape)} in the model")
            if is_gpu_array(current):
                rt = _cuda_runtime()
                rt.as_device(current).copy_to_device(
                    np.ascontiguousarray(value, dtype=current.dtype))
            elif p is not None:
                np.copyto(p.data, value, casting="unsafe")
            else:
                object.__setattr__(m, name, np.array(value, dtype=current.dtype))
        return missing, unexpected

    # calling ---------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, grad_output, input_grad=True):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _keep(self, **items):
        """Keep ``items`` for the backward (train mode), or nothing (eval mode)."""
        ctx = self._ctx
        ctx.clear()
        if self.training:
            ctx.update(items)

    def _take(self):
        """The context the forward kept (consumed: one backward per forward), or a clear error."""
        ctx = self._ctx
        if not ctx:
            raise RuntimeError(f"{type(self).__name__}.backward: nothing saved to differentiate; "
                               f"call forward in train mode (model.train()) first, and backward "
                               f"only once per forward")
        object.__setattr__(self, "_ctx", {})
        return ctx

    # fusion with the next module (nn.Sequential) -----------------------------------------
    # True: Sequential first offers this module and the next one to
    # _forward_fused(next, x) and _backward_fused(next, grad_output, input_grad), which run
    # the pair in one pass or return NotImplemented (then each module runs on its own)
    _fuses_next = False

    # printing --------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside ``Name(...)`` in the repr (layers override it)."""
        return ""

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, m in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(m), 2))
        head = type(self).__name__ + "("
        if not lines:
            return head + ")"
        if len(lines) == 1 and not self._modules:
            return head + lines[0] + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """A chain of modules: ``forward`` runs them in order, ``backward`` in reverse.

    Children are named ``"0"``, ``"1"``, ... (so ``state_dict`` keys are PyTorch's).

    Parameters
    ----------
    *modules : Module

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> model(np.ones((5, 4), np.float32)).shape
    (5, 2)
    >>> model.backward(np.ones((5, 2), np.float32)).shape
    (5, 4)
    >>> model
    Sequential(
      (0): Linear(in_features=4, out_features=3, bias=True)
      (1): ReLU()
      (2): Linear(in_features=3, out_features=2, bias=True)
    )
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*mods[i])
        return mods[i]

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        mods = list(self._modules.values())
        i, n = 0, len(mods)
        while i < n:
            m = mods[i]
            if m._fuses_next and i + 1 < n:   # e.g. MaxPool2d(2) then ReLU: one pass
                y = m._forward_fused(mods[i + 1], x)
                if y is not NotImplemented:
                    x = y
                    i += 2
                    continue
            x = m(x)
            i += 1
        return x

    def backward(self, grad_output, input_grad=True):
        """Back-propagate ``grad_output`` (dL/d output) through the chain.

        Fills every parameter's ``.grad`` (accumulating) and returns dL/d input, or None
        with ``input_grad=False`` (then the first layer skips that computation: use it
        when the input is data, as in a training loop).
        """
        mods = list(self._modules.values())
        g = grad_output
        i = len(mods) - 1
        while i >= 0:
            if i > 0 and mods[i - 1]._fuses_next:     # a pair the forward fused
                r = mods[i - 1]._backward_fused(mods[i], g, input_grad or i > 1)
                if r is not NotImplemented:
                    g = r
                    i -= 2
                    continue
            g = mods[i].backward(g, input_grad=input_grad or i > 0)
            i -= 1
        return g
