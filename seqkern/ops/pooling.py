"""Max-pool ops (1d, 2d, 3d): forward with or without argmax indices, and backward.

Dimension legend
  N  batch          C  channels
  S  spatial axes: (L,), (H, W) or (D, H, W)     S_out  the pooled sizes
  k, s, d  kernel size, stride, dilation per spatial axis
  (before, after)  padding per spatial axis

Semantics: ``../shared/SPEC.md`` ("Max pooling"). Indices are int64 flat offsets within
each (n, c) plane of the unpadded input, -1 where the maximum is a padded position (only
possible with a finite ``pad_value``) or the window has no in-bounds position. Outputs,
indices and gradients keep the input's memory layout (contiguous or channels_last /
channels_last_3d, as ``Tensor.suggest_memory_format`` reads it).

Ops
  seqkern::max_pool(input (N, C, *S), kernel_size int[], stride int[], dilation int[],
                    padding int[] (before_0, after_0, before_1, after_1, ...),
                    ceil_mode bool, pad_value float, need_indices bool)
      -> (output (N, C, *S_out), indices (N, C, *S_out) int64, or (0,) without need_indices)
  seqkern::max_pool_backward(grad_output (N, C, *S_out), indices (N, C, *S_out),
                             input_size int[] (N, C, *S), kernel_size int[], stride int[],
                             dilation int[], padding int[], channels_last bool)
      -> grad_input (N, C, *S)
  indices must come from seqkern::max_pool with the same window geometry.

Every backend (``seqkern._backend``, family "pooling") implements, with exactly these
arguments (padding here is a sequence of (before, after) pairs, one per spatial axis):
  max_pool_forward(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value,
                   need_indices) -> (output, indices)
  max_pool_backward(grad_output, indices, input_size, kernel_size, stride, dilation,
                    padding) -> grad_input
(the window geometry lets a backend gather per input element instead of scattering).
Backends receive dense tensors (contiguous or channels_last) and a pad_value already
representable in the input dtype (NaN is rejected); the op returns results in the
input's layout.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .. import _backend

SUPPORTED_DTYPES = (
    torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
)


def output_size(length: int, kernel: int, stride: int, dilation: int, before: int, after: int,
                ceil_mode: bool) -> int:
    """Pooled length along one axis: torch's rule, extended to unequal padding sides."""
    size = (length + before + after - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    # With ceil_mode the last window must start inside the input or the leading padding.
    if ceil_mode and (size - 1) * stride >= length + before:
        size -= 1
    return size


def same_padding(length: int, kernel: int, stride: int, dilation: int) -> Tuple[int, int]:
    """TensorFlow's "same" padding along one axis: (before, after), the smaller half before."""
    size = -(-length // stride)
    total = max((size - 1) * stride + (kernel - 1) * dilation + 1 - length, 0)
    return total // 2, total - total // 2


def pairs(padding: Sequence[int]) -> List[Tuple[int, int]]:
    """(before_0, after_0, before_1, ...) -> [(before_0, after_0), (before_1, after_1), ...]."""
    return [(padding[2 * i], padding[2 * i + 1]) for i in range(len(padding) // 2)]


def memory_format_of(tensor: Tensor) -> torch.memory_format:
    if tensor.dim() < 4:
        return torch.contiguous_format
    return suggest_memory_format(tensor)


def check_pad_value(dtype: torch.dtype, pad_value: float) -> None:
    if math.isnan(pad_value):
        raise ValueError("seqkern max_pool: pad_value must not be NaN")
    if dtype.is_floating_point or pad_value == -math.inf:
        return
    info = torch.iinfo(dtype)
    if not (pad_value == int(pad_value) and info.min <= pad_value <= info.max):
        raise ValueError(
            f"seqkern max_pool: pad_value {pad_value} is not a value of the input dtype {dtype}; "
            "use -inf or an integer in its range"
        )


def _representable_pad_value(dtype: torch.dtype, pad_value: float) -> float:
    """pad_value rounded to the input dtype, so that every backend compares the same number."""
    if pad_value == -math.inf or not dtype.is_floating_point:
        return pad_value
    return torch.tensor(pad_value, dtype=dtype).item()


def check_pool_arguments(input, kernel_size, stride, dilation, padding, pad_value) -> List[int]:
    """Validate the op's arguments (the messages name the argument and what it got)."""
    spatial = input.dim() - 2
    if spatial not in (1, 2, 3):
        raise ValueError(
            f"seqkern max_pool: input must be (N, C, *S) with 1 to 3 spatial axes, got shape {tuple(input.shape)}"
        )
    if input.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"seqkern max_pool: dtype {input.dtype} is not supported")
    for name, values, length in (("kernel_size", kernel_size, spatial), ("stride", stride, spatial),
                                 ("dilation", dilation, spatial), ("padding", padding, 2 * spatial)):
        if len(values) != length:
            raise ValueError(f"seqkern max_pool: {name} needs {length} entries for a {spatial}-d pool, got {list(values)}")
    for name, values in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
        if any(v < 1 for v in values):
            raise ValueError(f"seqkern max_pool: {name} must be positive, got {list(values)}")
    if any(p < 0 for p in padding):
        raise ValueError(f"seqkern max_pool: padding must be non-negative, got {list(padding)}")
    if any(size < 1 for size in input.shape[2:]):
        raise ValueError(f"seqkern max_pool: spatial sizes must be positive, got shape {tuple(input.shape)}")
    check_pad_value(input.dtype, pad_value)


def _output_shape(input, kernel_size, stride, dilation, padding, ceil_mode):
    sizes = [
        output_size(length, k, s, d, before, after, ceil_mode)
        for length, k, s, d, (before, after) in zip(input.shape[2:], kernel_size, stride, dilation, pairs(padding))
    ]
    if any(size < 1 for size in sizes):
        raise ValueError(
            f"seqkern max_pool: input of shape {tuple(input.shape)} gives output size {tuple(sizes)}, which is too small"
        )
    return (input.shape[0], input.shape[1], *sizes)


@torch.library.custom_op("seqkern::max_pool", mutates_args=())
def max_pool(
    input: Tensor,
    kernel_size: List[int],
    stride: List[int],
    dilation: List[int],
    padding: List[int],
    ceil_mode: bool,
    pad_value: float,
    need_indices: bool,
) -> Tuple[Tensor, Tensor]:
    """Max pool over the trailing 1-3 axes of (N, C, *S): returns (output, indices)."""
    check_pool_arguments(input, kernel_size, stride, dilation, padding, pad_value)
    _output_shape(input, kernel_size, stride, dilation, padding, ceil_mode)
    layout = memory_format_of(input)
    forward = _backend.implementation("pooling", "max_pool_forward", input.device)
    output, indices = forward(
        input.contiguous(memory_format=layout), list(kernel_size), list(stride), list(dilation), pairs(padding),
        ceil_mode, _representable_pad_value(input.dtype, pad_value), need_indices,
    )
    output = output.contiguous(memory_format=layout)
    indices = indices.contiguous(memory_format=layout) if need_indices else indices
    return output, indices


@max_pool.register_fake
def _max_pool_fake(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, need_indices):
    check_pool_arguments(input, kernel_size, stride, dilation, padding, pad_value)
    shape = _output_shape(input, kernel_size, stride, dilation, padding, ceil_mode)
    layout = memory_format_of(input)
    output = input.new_empty(shape, memory_format=layout)
    if need_indices:
        indices = input.new_empty(shape, dtype=torch.int64, memory_format=layout)
    else:
        indices = input.new_empty((0,), dtype=torch.int64)
    return output, indices


def _check_backward_arguments(grad_output, indices, input_size):
    if tuple(indices.shape) != tuple(grad_output.shape):
        raise ValueError(
            f"seqkern max_pool_backward: indices of shape {tuple(indices.shape)} do not match grad_output of "
            f"shape {tuple(grad_output.shape)}"
        )
    if indices.dtype != torch.int64:
        raise ValueError(f"seqkern max_pool_backward: indices must be int64, got {indices.dtype}")
    if len(input_size) != grad_output.dim() or tuple(input_size[:2]) != tuple(grad_output.shape[:2]):
        raise ValueError(
            f"seqkern max_pool_backward: input_size {list(input_size)} does not match grad_output of shape "
            f"{tuple(grad_output.shape)} in rank, batch and channels"
        )


@torch.library.custom_op("seqkern::max_pool_backward", mutates_args=())
def max_pool_backward(
    grad_output: Tensor,
    indices: Tensor,
    input_size: List[int],
    kernel_size: List[int],
    stride: List[int],
    dilation: List[int],
    padding: List[int],
    channels_last: bool,
) -> Tensor:
    """Add each output gradient into its argmax position; index -1 contributes nothing."""
    _check_backward_arguments(grad_output, indices, input_size)
    layout = _layout(len(input_size), channels_last)
    backward = _backend.implementation("pooling", "max_pool_backward", grad_output.device)
    grad_input = backward(
        grad_output.contiguous(memory_format=layout), indices.contiguous(memory_format=layout), list(input_size),
        list(kernel_size), list(stride), list(dilation), pairs(padding),
    )
    return grad_input.contiguous(memory_format=layout)


@max_pool_backward.register_fake
def _max_pool_backward_fake(grad_output, indices, input_size, kernel_size, stride, dilation, padding, channels_last):
    _check_backward_arguments(grad_output, indices, input_size)
    return grad_output.new_empty(input_size, memory_format=_layout(len(input_size), channels_last))


def _layout(rank: int, channels_last: bool) -> torch.memory_format:
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if rank == 4 else torch.channels_last_3d


def _setup_context(ctx, inputs, output):
    input, kernel_size, stride, dilation, padding, _, _, need_indices = inputs
    if not need_indices:
        raise RuntimeError(
            "seqkern::max_pool was called with need_indices=False on an input that requires grad; "
            "its output would have no gradient. Pass need_indices=True."
        )
    _, indices = output
    ctx.input_size = list(input.shape)
    ctx.geometry = (list(kernel_size), list(stride), list(dilation), list(padding))
    ctx.channels_last = memory_format_of(input) != torch.contiguous_format
    ctx.save_for_backward(indices)
    ctx.mark_non_differentiable(indices)


def _backward(ctx, grad_output, _grad_indices):
    (indices,) = ctx.saved_tensors
    grad_input = max_pool_backward(grad_output, indices, ctx.input_size, *ctx.geometry, ctx.channels_last)
    return grad_input, None, None, None, None, None, None, None


max_pool.register_autograd(_backward, setup_context=_setup_context)


def _backward_setup_context(ctx, inputs, output):
    indices = inputs[1]
    ctx.save_for_backward(indices)


def _double_backward(ctx, grad_grad_input):
    """max_pool_backward is linear in grad_output: its gradient gathers at the argmax."""
    (indices,) = ctx.saved_tensors
    planes = grad_grad_input.flatten(2)
    flat_indices = indices.flatten(2)
    gathered = planes.gather(2, flat_indices.clamp(min=0))
    grad_grad_output = torch.where(flat_indices >= 0, gathered, torch.zeros_like(gathered))
    return grad_grad_output.reshape(indices.shape), None, None, None, None, None, None, None


max_pool_backward.register_autograd(_double_backward, setup_context=_backward_setup_context)
