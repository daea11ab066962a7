"""Gradients of conv2d (as ``torch.nn.grad``), on the same kernels training runs."""
from ._conv import input_grad, weight_grad


def conv2d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 padding_mode="zeros", algorithm="auto", precision=None):
    """Gradient of :func:`fastconv.conv2d` with respect to its input.

    Parameters
    ----------
    input_size : tuple
        Shape of the forward's input, ``(N, C_in, H, W)`` or ``(C_in, H, W)``.
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, dilation, groups, padding_mode :
        The forward's arguments (every form :func:`fastconv.conv2d` takes).
    algorithm : {'auto', 'direct', 'im2col', 'fft', 'winograd', 'winograd_f2'}
    precision : {None, 'highest', 'high', 'medium'}
        What ``'auto'`` may choose (see :func:`fastconv.set_precision`); None: the global level.

    Returns
    -------
    ndarray of shape ``input_size``

    Examples
    --------
    >>> import numpy as np, fastconv as fc
    >>> w = np.array([[[[1., 0.], [0., 1.]]]])
    >>> gy = np.array([[[[1., 2.], [3., 4.]]]])
    >>> fc.grad.conv2d_input((1, 1, 3, 3), w, gy)
    array([[[[1., 2., 0.],
             [3., 5., 2.],
             [0., 3., 4.]]]])
    """
    return input_grad(2, "conv2d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups, padding_mode, algorithm, precision)[0]


def conv2d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  padding_mode="zeros", algorithm="auto", precision=None):
    """Gradient of :func:`fastconv.conv2d` with respect to its weight.

    Parameters
    ----------
    input : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight_size : tuple ``(C_out, C_in / groups, kH, kW)``
    grad_output : array_like, shape (N, C_out, H_out, W_out)
    stride, padding, dilation, groups, padding_mode, algorithm, precision :
        As for :func:`conv2d_input`.

    Returns
    -------
    ndarray of shape ``weight_size``

    Examples
    --------
    >>> import numpy as np, fastconv as fc
    >>> x = np.arange(1., 10.).reshape(1, 1, 3, 3)
    >>> gy = np.array([[[[1., 2.], [3., 4.]]]])
    >>> fc.grad.conv2d_weight(x, (1, 1, 2, 2), gy)
    array([[[[37., 47.],
             [67., 77.]]]])
    """
    return weight_grad(2, "conv2d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, padding_mode, algorithm, precision)


def conv1d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 padding_mode="zeros", algorithm="auto", precision=None):
    """Gradient of :func:`fastconv.conv1d` with respect to its input (see :func:`conv2d_input`).

    >>> import numpy as np, fastconv as fc
    >>> fc.grad.conv1d_input((1, 1, 3), np.array([[[1., 1.]]]), np.array([[[1., 2.]]]))
    array([[[1., 3., 2.]]])
    """
    return input_grad(1, "conv1d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups, padding_mode, algorithm, precision)[0]


def conv1d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  padding_mode="zeros", algorithm="auto", precision=None):
    """Gradient of :func:`fastconv.conv1d` with respect to its weight (see :func:`conv2d_weight`).

    >>> import numpy as np, fastconv as fc
    >>> fc.grad.conv1d_weight(np.array([[[1., 2., 3.]]]), (1, 1, 2), np.array([[[1., 1.]]]))
    array([[[3., 5.]]])
    """
    return weight_grad(1, "conv1d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, padding_mode, algorithm, precision)


def conv3d_input(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                 padding_mode="zeros", algorithm="auto", precision=None):
    """Gradient of :func:`fastconv.conv3d` with respect to its input (see :func:`conv2d_input`).

    >>> import numpy as np, fastconv as fc
    >>> fc.grad.conv3d_input((1, 1, 1, 1, 2), np.ones((1, 1, 1, 1, 1)), np.ones((1, 1, 1, 1, 2)))
    array([[[[[1., 1.]]]]])
    """
    return input_grad(3, "conv3d_input", input_size, weight, grad_output, stride, padding,
                      dilation, groups, padding_mode, algorithm, precision)[0]


def conv3d_weight(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                  padding_mode="zeros", algorithm="auto", precision=None):
    """Gradient of :func:`fastconv.conv3d` with respect to its weight (see :func:`conv2d_weight`).

    >>> import numpy as np, fastconv as fc
    >>> fc.grad.conv3d_weight(np.ones((1, 1, 2, 2, 2)), (1, 1, 1, 1, 1), np.ones((1, 1, 2, 2, 2)))
    array([[[[[8.]]]]])
    """
    return weight_grad(3, "conv3d_weight", input, weight_size, grad_output, stride, padding,
                       dilation, groups, padding_mode, algorithm, precision)
