"""Functional forms of the seqkern ops (recurrent layers and cells, max pooling)."""

import math as _math

from .ops import pooling as _pooling

_POOL_DOC = """Max pooling over the trailing {dims} axes of (N, C, {axes}) or (C, {axes}) input.

Same arguments, results, layouts and errors as torch.nn.functional.max_pool{dims}d, plus
the seqkern extension (SPEC.md): ``padding`` may also be "same" (TensorFlow's rule),
"valid", or one (before, after) pair per spatial axis, and ``pad_value`` (default -inf)
is the value of padded positions; an output whose maximum is a padded position gets
index -1. Without return_indices and without a gradient to track, no indices are computed.
"""


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, pad_value=-_math.inf):
    return _pooling.max_pool_nd(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                                pad_value)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, pad_value=-_math.inf):
    return _pooling.max_pool_nd(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                                pad_value)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, pad_value=-_math.inf):
    return _pooling.max_pool_nd(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                                pad_value)


max_pool1d.__doc__ = _POOL_DOC.format(dims=1, axes="L")
max_pool2d.__doc__ = _POOL_DOC.format(dims=2, axes="H, W")
max_pool3d.__doc__ = _POOL_DOC.format(dims=3, axes="D, H, W")
