"""fastconv.nn: a thin, explicit-backward layer library on fastconv's kernels.

No autograd tape: ``model(x)`` runs the forward and keeps what the backward needs (in
train mode); ``model.backward(dL_dout)`` fills every parameter's ``.grad``. Shapes,
parameter order, state-dict names and default initialisation follow PyTorch, so weights
copied from a PyTorch model give the same outputs and gradients.

>>> import numpy as np
>>> from fastconv import nn, optim
>>> model = nn.Sequential(
...     nn.Conv2d(1, 10, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
...     nn.Conv2d(10, 20, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
...     nn.Flatten(), nn.Linear(320, 50), nn.ReLU(), nn.Linear(50, 10), nn.LogSoftmax(dim=1))
>>> loss_fn = nn.NLLLoss()
>>> opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.5)
>>> x = np.zeros((4, 1, 28, 28), np.float32)
>>> loss = loss_fn(model(x), np.array([0, 1, 2, 3]))
>>> model.backward(loss_fn.backward(), input_grad=False)
>>> opt.step(); opt.zero_grad()
>>> list(model.state_dict())[:4]
['0.weight', '0.bias', '3.weight', '3.bias']
"""
from . import functional, init
from .io import load, save
from .layers import (AvgPool2d, Conv2d, Dropout, Flatten, Identity, Linear, LogSoftmax,
                     MaxPool2d, ReLU)
from .losses import CrossEntropyLoss, NLLLoss
from .module import (Module, Parameter, Sequential, default_generator, get_rng_state,
                     manual_seed, set_rng_state)

__all__ = ["Module", "Parameter", "Sequential", "Conv2d", "Linear", "ReLU", "MaxPool2d",
           "AvgPool2d", "Dropout", "Flatten", "LogSoftmax", "Identity", "NLLLoss",
           "CrossEntropyLoss", "save", "load", "manual_seed", "default_generator",
           "get_rng_state", "set_rng_state", "functional", "init"]
