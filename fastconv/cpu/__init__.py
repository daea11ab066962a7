"""CPU kernels (numba @njit). Each module computes on prepared, C-contiguous 5-D arrays
(N, C, D, H, W); wrappers above them validate and allocate."""
