"""GPU backend on numba.cuda (optional: ``pip install fastconv[cuda]``).

Nothing here is imported by ``import fastconv``: the public functions load
:mod:`fastconv.cuda.api` on first use of ``device="cuda"`` or of a GPU array, so a
CPU-only install never imports numba.cuda or a CUDA library.

Layout (kernels in ``*_kernel`` modules, thin launch wrappers above them):

- ``runtime``      lazy numba.cuda import, device checks, device arrays, views, workspaces
- ``array_kernel`` fill, casts, copies, padding and its adjoint, flip-transpose, bias add,
                   the NaN/inf check
- ``direct_kernel``  output-tiled direct convolution (input tile + filter in shared memory)
- ``gemm_kernel``  the im2col algorithm as an implicit GEMM (``im2col_fwd``, the split-K
                   ``im2col_bwd_weight``), and a plain GEMM
- ``fft_kernel``   Stockham radix-2 FFTs, per-frequency channel contraction
- ``nn_kernel``    elementwise, pooling, softmax/NLL and optimiser kernels
- ``engine``       forward / backward_input / backward_weight on padded 5-D device arrays,
                   and each algorithm's kernel triple (named by ``fastconv.dispatch.REGISTRY``)
- ``api``          the entry points called by fastconv.conv*d, grad and nn
- ``cost``         the GPU cost table: estimates only (``fastconv.dispatch`` chooses)
- ``nn_ops``       layer ops for training on the GPU
"""
