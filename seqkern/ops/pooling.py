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
                    ceil_mode bool, pad_value float, index_dtype ScalarType?)
      -> (output (N, C, *S_out), indices (N, C, *S_out) of index_dtype, or (0,) for None)
  index_dtype: torch.int64 (indices a user sees, as torch's), torch.int32 (indices kept
  only for backward: half the memory traffic; planes below 2**31 elements) or None
  (inference: no indices are computed at all).
  seqkern::max_pool_backward(grad_output (N, C, *S_out), indices (N, C, *S_out),
                             input_size int[] (N, C, *S), kernel_size int[], stride int[],
                             dilation int[], padding int[], channels_last bool)
      -> grad_input (N, C, *S)
  indices (int64 or int32) must come from seqkern::max_pool with the same window geometry.
Their schemas, CPU kernels and autograd (double backward included) are C++
(csrc/pooling_op.cpp, registered when seqkern._C loads); this module adds the fake kernels
(torch.compile), the CUDA kernels (Triton) and the function the CPU kernels hand over to
while SEQKERN_BACKEND is set.

Every backend (``seqkern._backend``, family "pooling") implements, with exactly these
arguments (padding here is a sequence of (before, after) pairs, one per spatial axis):
  max_pool_forward(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value,
                   index_dtype) -> (output, indices)
  max_pool_backward(grad_output, indices, input_size, kernel_size, stride, dilation,
                    padding) -> grad_input
(the window geometry lets a backend gather per input element instead of scattering).
Backends receive dense tensors (contiguous or channels_last) and a pad_value already
representable in the input dtype (NaN is rejected); the op returns results in the
input's layout.
"""
from __future__ import annotations

import math
import operator
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from .. import _backend
from .._names import python_type_name, scalar_type_name
from ._entry import op_entry

INDEX_DTYPES = (torch.int64, torch.int32)
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


def _check_window(op, shape, kernel_size, stride, dilation, padding) -> None:
    """The window arguments of ``op`` for an input of ``shape`` (N, C, *S): an entry per spatial
    axis (two of padding), positive sizes, non-negative padding."""
    spatial = len(shape) - 2
    for name, values, length in (("kernel_size", kernel_size, spatial), ("stride", stride, spatial),
                                 ("dilation", dilation, spatial), ("padding", padding, 2 * spatial)):
        if len(values) != length:
            raise ValueError(f"seqkern {op}: {name} needs {length} entries for a {spatial}-d pool, got {list(values)}")
    for name, values in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
        if any(v < 1 for v in values):
            raise ValueError(f"seqkern {op}: {name} must be positive, got {list(values)}")
    if any(p < 0 for p in padding):
        raise ValueError(f"seqkern {op}: padding must be non-negative, got {list(padding)}")
    if any(size < 1 for size in shape[2:]):
        raise ValueError(f"seqkern {op}: spatial sizes must be positive, got shape {tuple(shape)}")


def check_pool_arguments(input, kernel_size, stride, dilation, padding, pad_value, index_dtype) -> None:
    """Validate the op's arguments (the messages name the argument and what it got)."""
    spatial = input.dim() - 2
    if spatial not in (1, 2, 3):
        raise ValueError(
            f"seqkern max_pool: input must be (N, C, *S) with 1 to 3 spatial axes, got shape {tuple(input.shape)}"
        )
    if input.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(f"seqkern max_pool: dtype {input.dtype} is not supported")
    _check_window("max_pool", tuple(input.shape), kernel_size, stride, dilation, padding)
    check_pad_value(input.dtype, pad_value)
    if index_dtype is not None and index_dtype not in INDEX_DTYPES:
        raise ValueError(f"seqkern max_pool: index_dtype must be torch.int64, torch.int32 or None, got {index_dtype}")
    if index_dtype == torch.int32 and math.prod(input.shape[2:]) > 2**31 - 1:
        raise ValueError("seqkern max_pool: int32 indices need planes of fewer than 2**31 elements, "
                         f"got shape {tuple(input.shape)}")


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


def _forward_on_backend(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype):
    """seqkern::max_pool on the backend ``_backend`` picks: the CUDA kernel, and the CPU kernel
    while SEQKERN_BACKEND is set (without it the C++ kernel runs with no Python)."""
    check_pool_arguments(input, kernel_size, stride, dilation, padding, pad_value, index_dtype)
    _output_shape(input, kernel_size, stride, dilation, padding, ceil_mode)
    layout = memory_format_of(input)
    forward = _backend.implementation("pooling", "max_pool_forward", input.device)
    output, indices = forward(
        input.contiguous(memory_format=layout), list(kernel_size), list(stride), list(dilation), pairs(padding),
        ceil_mode, _representable_pad_value(input.dtype, pad_value), index_dtype,
    )
    output = output.contiguous(memory_format=layout)
    indices = indices.contiguous(memory_format=layout) if index_dtype is not None else indices
    return output, indices


def _max_pool_fake(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype):
    check_pool_arguments(input, kernel_size, stride, dilation, padding, pad_value, index_dtype)
    shape = _output_shape(input, kernel_size, stride, dilation, padding, ceil_mode)
    layout = memory_format_of(input)
    output = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=layout)
    if index_dtype is not None:
        indices = torch.empty(shape, dtype=index_dtype, device=input.device, memory_format=layout)
    else:
        indices = input.new_empty((0,), dtype=torch.int64)
    return output, indices


def _check_backward_arguments(grad_output, indices, input_size, kernel_size, stride, dilation, padding):
    if grad_output.dim() not in (3, 4, 5):
        raise ValueError(
            "seqkern max_pool_backward: grad_output must be (N, C, *S) with 1 to 3 spatial axes, got shape "
            f"{tuple(grad_output.shape)}"
        )
    if tuple(indices.shape) != tuple(grad_output.shape):
        raise ValueError(
            f"seqkern max_pool_backward: indices of shape {tuple(indices.shape)} do not match grad_output of "
            f"shape {tuple(grad_output.shape)}"
        )
    if indices.dtype not in INDEX_DTYPES:
        raise ValueError(f"seqkern max_pool_backward: indices must be int64 or int32, got {indices.dtype}")
    if len(input_size) != grad_output.dim() or tuple(input_size[:2]) != tuple(grad_output.shape[:2]):
        raise ValueError(
            f"seqkern max_pool_backward: input_size {list(input_size)} does not match grad_output of shape "
            f"{tuple(grad_output.shape)} in rank, batch and channels"
        )
    _check_window("max_pool_backward", tuple(input_size), kernel_size, stride, dilation, padding)


def _backward_on_backend(grad_output, indices, input_size, kernel_size, stride, dilation, padding, channels_last):
    """seqkern::max_pool_backward on the backend ``_backend`` picks."""
    _check_backward_arguments(grad_output, indices, input_size, kernel_size, stride, dilation, padding)
    layout = _layout(len(input_size), channels_last)
    backward = _backend.implementation("pooling", "max_pool_backward", grad_output.device)
    grad_input = backward(
        grad_output.contiguous(memory_format=layout), indices.contiguous(memory_format=layout), list(input_size),
        list(kernel_size), list(stride), list(dilation), pairs(padding),
    )
    return grad_input.contiguous(memory_format=layout)


def _max_pool_backward_fake(grad_output, indices, input_size, kernel_size, stride, dilation, padding, channels_last):
    _check_backward_arguments(grad_output, indices, input_size, kernel_size, stride, dilation, padding)
    return torch.empty(input_size, dtype=grad_output.dtype, device=grad_output.device,
                       memory_format=_layout(len(input_size), channels_last))


def _layout(rank: int, channels_last: bool) -> torch.memory_format:
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if rank == 4 else torch.channels_last_3d


def _max_pool_vmap(info, in_dims, input, kernel_size, stride, dilation, padding, ceil_mode, pad_value,
                   index_dtype):
    """torch.vmap of seqkern::max_pool: the vmapped dimension joins the batch, one call for all."""
    batched = input.movedim(in_dims[0], 0)
    output, indices = max_pool(batched.flatten(0, 1), kernel_size, stride, dilation, padding, ceil_mode,
                               pad_value, index_dtype)
    batch = batched.shape[:2]
    if index_dtype is None:
        return (output.unflatten(0, batch), indices), (0, None)
    return (output.unflatten(0, batch), indices.unflatten(0, batch)), (0, 0)


# The schemas, the CPU kernels and autograd (double backward included) are registered in C++
# (csrc/pooling_op.cpp) when seqkern._C loads; this module adds what must be Python. Without the
# extension the ops do not exist, and calling them says how to build it.
try:
    _C = _backend.load_cpp()
except _backend.BackendUnavailableError as error:
    max_pool = max_pool_backward = _direct_max_pool = _backend.extension_missing(error)
else:
    _C._set_pooling_override(_forward_on_backend, _backward_on_backend)
    torch.library.register_fake("seqkern::max_pool")(_max_pool_fake)
    torch.library.register_fake("seqkern::max_pool_backward")(_max_pool_backward_fake)
    torch.library.register_kernel("seqkern::max_pool", "cuda", _forward_on_backend)
    torch.library.register_kernel("seqkern::max_pool_backward", "cuda", _backward_on_backend)
    torch.library.register_vmap("seqkern::max_pool")(_max_pool_vmap)
    max_pool = torch.ops.seqkern.max_pool.default
    max_pool_backward = torch.ops.seqkern.max_pool_backward.default
    _direct_max_pool = _C._max_pool_call


# ---------------------------------------------------------------------------------------
# Front end of seqkern.functional.max_pool{1,2,3}d: torch's argument handling, checks and
# messages (DilatedMaxPool2d/3d, MaxPooling.cpp, Pool.h in ATen), then the op.
# ---------------------------------------------------------------------------------------
_ARGUMENT_POSITIONS = {"kernel_size": 2, "stride": 3, "padding": 4, "dilation": 5}
_INT32_RANGE = (-(2**31), 2**31 - 1)


def _is_index(value) -> bool:
    """Whether torch's int parsing takes value as an int: anything with __index__ but bool."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _int_list(function: str, name: str, value) -> List[int]:
    """torch's int[] argument parsing: an int, or a list or tuple of ints."""
    if type(value) is int:  # the common cases first: each check below keeps their result
        return [value]
    if type(value) in (list, tuple) and all(type(item) is int for item in value):
        return list(value)
    position = _ARGUMENT_POSITIONS[name]
    if isinstance(value, (list, tuple)):
        # torch checks the type of the first element only, then unpacks each, and unpacking
        # takes a bool for an int: (2, True) is (2, 1), (True, 2) is an error.
        if value and not _is_index(value[0]):
            raise TypeError(f"{function}(): argument '{name}' (position {position}) must be tuple of ints, "
                            f"but found element of type {python_type_name(value[0])} at pos 0")
        for at, item in enumerate(value):
            if not (isinstance(item, bool) or _is_index(item)):
                raise TypeError(f"{function}(): argument '{name}' failed to unpack the object at pos {at + 1} "
                                f'with error "type must be tuple of ints,but got {python_type_name(item)}"')
        return [item.__index__() for item in value]
    if not _is_index(value):
        raise TypeError(f"{function}(): argument '{name}' (position {position}) must be tuple of ints, "
                        f"not {python_type_name(value)}")
    return [value.__index__()]


def _as_c_int(value: int) -> int:
    if not _INT32_RANGE[0] <= value <= _INT32_RANGE[1]:
        raise RuntimeError("value cannot be converted to type int without overflow")
    return value


def _shape_text(tensor: Tensor) -> str:
    return "[" + ", ".join(str(size) for size in tensor.shape) + "]"


def _half_toward_zero(value: int) -> int:
    return -(-value // 2) if value < 0 else value // 2


def _torch_output_size(length, kernel, pad, stride, dilation, ceil_mode):
    """ATen's pooling_output_shape, with its checks."""
    if stride == 0:
        raise RuntimeError("stride should not be zero")
    if pad < 0:
        raise RuntimeError(f"pad must be non-negative, but got pad: {pad}")
    if pad > _half_toward_zero((kernel - 1) * dilation + 1):
        raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={pad}, "
                           f"kernel_size={kernel} and dilation={dilation}")
    return output_size(length, kernel, stride, dilation, pad, pad, ceil_mode)


class _Window:
    """A checked pool geometry: per spatial axis kernel, stride, dilation, (before, after)."""

    def __init__(self, kernel, stride, dilation, padding):
        self.kernel, self.stride, self.dilation, self.padding = list(kernel), list(stride), list(dilation), padding


def _check_2d(input, kernel, stride, padding, dilation, ceil_mode, torch_padding=True):
    if len(kernel) not in (1, 2):
        raise RuntimeError("max_pool2d: kernel_size must either be a single int, or a tuple of two ints")
    kh = _as_c_int(kernel[0])
    kw = kh if len(kernel) == 1 else _as_c_int(kernel[1])
    if len(stride) not in (0, 1, 2):
        raise RuntimeError("max_pool2d: stride must either be omitted, a single int, or a tuple of two ints")
    sh = kh if not stride else _as_c_int(stride[0])
    sw = kw if not stride else sh if len(stride) == 1 else _as_c_int(stride[1])
    if torch_padding:
        if len(padding) not in (1, 2):
            raise RuntimeError("max_pool2d: padding must either be a single int, or a tuple of two ints")
        ph = _as_c_int(padding[0])
        pw = ph if len(padding) == 1 else _as_c_int(padding[1])
    else:
        ph = pw = 0
    if len(dilation) not in (1, 2):
        raise RuntimeError("max_pool2d: dilation must be either a single int, or a tuple of two ints")
    dh = _as_c_int(dilation[0])
    dw = dh if len(dilation) == 1 else _as_c_int(dilation[1])
    # Only a 5-D tensor can read as channels_last_3d.
    if input.dim() == 5 and memory_format_of(input) == torch.channels_last_3d:
        raise RuntimeError("Unsupported memory format. Supports only ChannelsLast, Contiguous")
    if input.dim() not in (3, 4):
        raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
    planes, height, width = input.shape[-3:]
    oh = _torch_output_size(height, kh, ph, sh, dh, ceil_mode) if torch_padding else 1
    ow = _torch_output_size(width, kw, pw, sw, dw, ceil_mode) if torch_padding else 1
    if kw <= 0 or kh <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kH: {kh} kW: {kw}")
    if sw <= 0 or sh <= 0:
        raise RuntimeError(f"stride should be greater than zero, but got dH: {sh} dW: {sw}")
    if dh <= 0 or dw <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got dilationH: {dh} dilationW: {dw}")
    sizes = input.shape
    valid_dims = sizes[1] != 0 and sizes[2] != 0
    if not ((input.dim() == 3 and sizes[0] != 0 and valid_dims) or (input.dim() == 4 and valid_dims and sizes[3] != 0)):
        raise RuntimeError("Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                           f"but got:{_shape_text(input)}")
    if torch_padding and not (kw // 2 >= pw and kh // 2 >= ph):
        raise RuntimeError(f"pad should be smaller than or equal to half of kernel size, but got padW = {pw}, "
                           f"padH = {ph}, kW = {kw}, kH = {kh}")
    if oh < 1 or ow < 1:
        raise RuntimeError(f"Given input size: ({planes}x{height}x{width}). Calculated output size: "
                           f"({planes}x{oh}x{ow}). Output size is too small")
    return _Window((kh, kw), (sh, sw), (dh, dw), [(ph, ph), (pw, pw)])


def _check_3d(input, kernel, stride, padding, dilation, ceil_mode, torch_padding=True):
    if len(kernel) not in (1, 3):
        raise RuntimeError("max_pool3d: kernel_size must either be a single int, or a tuple of three ints")
    kt = _as_c_int(kernel[0])
    kh, kw = (kt, kt) if len(kernel) == 1 else (_as_c_int(kernel[1]), _as_c_int(kernel[2]))
    if len(stride) not in (0, 1, 3):
        raise RuntimeError("max_pool3d: stride must either be omitted, a single int, or a tuple of three ints")
    if not stride:
        st, sh, sw = kt, kh, kw
    elif len(stride) == 1:
        st = sh = sw = _as_c_int(stride[0])
    else:
        st, sh, sw = (_as_c_int(s) for s in stride)
    if torch_padding:
        if len(padding) not in (1, 3):
            raise RuntimeError("max_pool3d: padding must either be a single int, or a tuple of three ints")
        pt, ph, pw = [_as_c_int(padding[0])] * 3 if len(padding) == 1 else (_as_c_int(p) for p in padding)
    else:
        pt = ph = pw = 0
    if len(dilation) not in (1, 3):
        raise RuntimeError("max_pool3d: dilation must be either a single int, or a tuple of three ints")
    dt, dh, dw = [_as_c_int(dilation[0])] * 3 if len(dilation) == 1 else (_as_c_int(d) for d in dilation)
    # Only a 4-D tensor can read as channels_last.
    if input.dim() == 4 and memory_format_of(input) == torch.channels_last:
        raise RuntimeError("Unsupported memory format. Supports only ChannelsLast3d, Contiguous")
    if input.dim() not in (4, 5):
        raise RuntimeError("non-empty 4D or 5D (batch mode) tensor expected for input")
    planes, time, height, width = input.shape[-4:]
    if torch_padding:
        ot = _torch_output_size(time, kt, pt, st, dt, ceil_mode)
        oh = _torch_output_size(height, kh, ph, sh, dh, ceil_mode)
        ow = _torch_output_size(width, kw, pw, sw, dw, ceil_mode)
    else:
        ot = oh = ow = 1
    if kt <= 0 or kw <= 0 or kh <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kT: {kt} kH: {kh} kW: {kw}")
    if st <= 0 or sw <= 0 or sh <= 0:
        raise RuntimeError(f"stride should be greater than zero, but got dT: {st} dH: {sh} dW: {sw}")
    if dt <= 0 or dw <= 0 or dh <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got dilationT: {dt} dilationH: {dh} "
                           f"dilationW: {dw}")
    function = f"max_pool3d_with_indices_out_{'cuda' if input.is_cuda else 'cpu'}_template()"
    for axis, size in enumerate(input.shape):
        if input.dim() == 5 and axis == 0:
            continue
        if size <= 0:
            raise RuntimeError(f"{function}: Expected input's non-batch dimensions to have positive length, but "
                               f"input has a shape of {_shape_text(input)} and non-batch dimension {size} has "
                               "length zero!")
    if torch_padding and not (kt // 2 >= pt and kw // 2 >= pw and kh // 2 >= ph):
        raise RuntimeError(f"pad should be smaller than or equal to half of kernel size, but got kT: {kt} kW: {kw} "
                           f"kH: {kh} padT: {pt} padW: {pw} padH: {ph}")
    if ot < 1 or oh < 1 or ow < 1:
        raise RuntimeError(f"Given input size: ({planes}x{time}x{height}x{width}). Calculated output size: "
                           f"({planes}x{ot}x{oh}x{ow}). Output size is too small")
    return _Window((kt, kh, kw), (st, sh, sw), (dt, dh, dw), [(pt, pt), (ph, ph), (pw, pw)])


def _check_1d(input, kernel, stride, padding, dilation, ceil_mode, torch_padding=True):
    """torch.max_pool1d's checks (the path without indices)."""
    sizes = input.shape
    if not ((input.dim() == 2 and sizes[0] != 0 and sizes[1] != 0)
            or (input.dim() == 3 and sizes[1] != 0 and sizes[2] != 0)):
        raise RuntimeError("max_pool1d: Expected 2D or 3D (batch mode) tensor with optional 0 dim batch size for "
                           f"input, but got:{_shape_text(input)}")
    if len(kernel) != 1:
        raise RuntimeError("max_pool1d() kernel_size must be an int, list of ints or tuple of ints of size 1 but "
                           f"got size {len(kernel)}")
    if len(stride) not in (0, 1):
        raise RuntimeError("max_pool1d() stride must be None, an int, list of ints, or tuple of ints of size 1 but "
                           f"got size {len(stride)}")
    if torch_padding and len(padding) != 1:
        raise RuntimeError("max_pool1d() padding must be an int, list of ints, or tuple of ints of size 1 but got "
                           f"size {len(padding)}")
    if len(dilation) != 1:
        raise RuntimeError("max_pool1d() dilation must be an int, list of ints or tuple of ints of size 1 but got "
                           f"size {len(dilation)}")
    (k,), (d,) = kernel, dilation
    s = stride[0] if stride else k
    p = padding[0] if torch_padding else 0
    if k <= 0:
        raise RuntimeError(f"max_pool1d() kernel_size must be greater than zero, but got {k}")
    if s <= 0:
        raise RuntimeError(f"max_pool1d() stride must be greater than zero, but got {s}")
    if p < 0:
        raise RuntimeError(f"max_pool1d() padding must be non-negative, but got {p}")
    if p > k // 2:
        raise RuntimeError(f"max_pool1d() padding should be at most half of kernel size, but got padding={p} and "
                           f"kernel_size={k}")
    if d <= 0:
        raise RuntimeError(f"max_pool1d() dilation must be greater than zero, but got {d}")
    out = _torch_output_size(sizes[-1], k, p, s, d, ceil_mode)
    if torch_padding and out <= 0:
        raise RuntimeError(f"max_pool1d() Invalid computed output size: {out}")
    return _Window((k,), (s,), (d,), [(p, p)])


def _check_1d_with_indices(input, kernel, stride, padding, dilation, ceil_mode, torch_padding=True):
    """torch.max_pool1d_with_indices's checks: its own, then max_pool2d's on (N, C, 1, L)."""
    stride = stride or kernel
    if input.dim() not in (2, 3):
        raise RuntimeError(f"Expected 2 to 3 dimensions, but got {input.dim()}-dimensional tensor for argument #1 "
                           "'self' (while checking arguments for max_pool1d)")
    for name, values in (("kernel_size", kernel), ("stride", stride), ("padding", padding), ("dilation", dilation)):
        if (torch_padding or name != "padding") and len(values) != 1:
            raise RuntimeError(f"max_pool1d() argument '{name}' should contain one int (got {len(values)})")
    window = _check_2d(input.unsqueeze(-2), [1, kernel[0]], [1, stride[0]], [0, padding[0] if torch_padding else 0],
                       [1, dilation[0]], ceil_mode, torch_padding)
    return _Window(window.kernel[1:], window.stride[1:], window.dilation[1:], window.padding[1:])


def _extension_padding(dims: int, input: Tensor, window: _Window, padding) -> List[Tuple[int, int]]:
    """padding="same" / "valid" / per-axis (before, after) pairs (SPEC.md, seqkern extension)."""
    if padding == "valid":
        return [(0, 0)] * dims
    if padding == "same":
        return [same_padding(length, k, s, d) for length, k, s, d in
                zip(input.shape[-dims:], window.kernel, window.stride, window.dilation)]
    if isinstance(padding, str) or len(padding) != dims or not all(
            isinstance(sides, (list, tuple)) and len(sides) == 2 and all(_is_index(p) and p >= 0 for p in sides)
            for sides in padding):
        raise ValueError(
            f"max_pool{dims}d: padding must be an int, a tuple of ints, 'same', 'valid' or one (before, after) pair "
            f"of non-negative ints per spatial axis ({dims}), got {padding!r}"
        )
    return [(before.__index__(), after.__index__()) for before, after in padding]


def _is_extension_padding(padding) -> bool:
    return isinstance(padding, str) or (
        isinstance(padding, (list, tuple)) and any(isinstance(sides, (list, tuple)) for sides in padding))


def _backward_index_dtype(input: Tensor, dims: int) -> torch.dtype:
    """Indices only backward reads: int32 (half the memory traffic) where a plane allows it."""
    return torch.int32 if math.prod(input.shape[-dims:]) <= 2**31 - 1 else torch.int64


def _plain_ints(value) -> bool:
    if type(value) is int:
        return True
    if type(value) not in (tuple, list):
        return False
    for item in value:
        if type(item) is not int:
            return False
    return True


def _hashable(value):
    """A list argument as a tuple (torch parses both alike), anything else as it is."""
    return tuple(value) if type(value) is list else value


# Checked geometries of recent calls, by _geometry_key: a module pools inputs of one shape
# call after call, and torch's argument checks cost more than the kernel on small inputs.
_GEOMETRIES: dict = {}
_MAX_GEOMETRIES = 256


def _geometry_key(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, pad_value):
    """What the checks' outcome depends on, or None where a cached outcome could differ from
    the checks': arguments whose type the checks look at (True == 1 and 2.0 == 2 as keys, but
    not for torch), a layout only the checks read (an unbatched 3-D pool's input), a tensor
    subclass, and Dynamo's tracing (which should see the checks, not a global dict)."""
    if type(input) is not Tensor or torch.compiler.is_compiling():
        return None
    if not (_plain_ints(kernel_size) and (stride is None or _plain_ints(stride))
            and (type(padding) is str or _plain_ints(padding)) and _plain_ints(dilation)):
        return None
    if type(ceil_mode) is not bool or type(return_indices) is not bool or type(pad_value) not in (float, int):
        return None
    if dims == 3 and input.dim() == 4:
        return None
    return (dims, _hashable(kernel_size), _hashable(stride), _hashable(padding), _hashable(dilation), ceil_mode,
            return_indices, pad_value, input.shape, input.dtype)


def _checked_geometry(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, pad_value):
    """torch's argument checks and messages, and the extension's; returns (kernel, stride,
    dilation, flat padding, the dtype of indices kept for backward)."""
    with_indices = return_indices
    function = f"max_pool{dims}d" + ("_with_indices" if with_indices else "")
    if not isinstance(input, Tensor):
        raise TypeError(f"{function}(): argument 'input' (position 1) must be Tensor, not {python_type_name(input)}")
    kernel = _int_list(function, "kernel_size", kernel_size)
    stride = [] if stride is None else _int_list(function, "stride", stride)
    extension = _is_extension_padding(padding)
    torch_padding = [] if extension else _int_list(function, "padding", padding)
    dilation = _int_list(function, "dilation", dilation)
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{function}(): argument 'ceil_mode' (position 6) must be bool, "
                        f"not {python_type_name(ceil_mode)}")
    if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)):
        raise TypeError(f"max_pool{dims}d: pad_value must be a real number, not {type(pad_value).__name__}")
    pad_value = float(pad_value)
    if dims == 1:
        check = _check_1d_with_indices if with_indices else _check_1d
    else:
        check = _check_2d if dims == 2 else _check_3d
    window = check(input, kernel, stride, torch_padding, dilation, ceil_mode, torch_padding=not extension)
    if extension:
        window.padding = _extension_padding(dims, input, window, padding)
        sizes = [output_size(length, k, s, d, before, after, ceil_mode) for length, k, s, d, (before, after) in
                 zip(input.shape[-dims:], window.kernel, window.stride, window.dilation, window.padding)]
        if min(sizes) < 1:
            raise RuntimeError(f"Given input size: ({'x'.join(str(s) for s in input.shape[-dims - 1:])}). "
                               f"Calculated output size: ({'x'.join(str(s) for s in [input.shape[-dims - 1], *sizes])}). "
                               "Output size is too small")
    if input.dtype not in SUPPORTED_DTYPES:
        kernel_name = "max_pool1d_impl" if dims == 1 and not with_indices else f"max_pool{max(dims, 2)}d"
        raise NotImplementedError(f'"{kernel_name}" not implemented for \'{scalar_type_name(input.dtype)}\'')
    check_pad_value(input.dtype, pad_value)
    flat_padding = [side for sides in window.padding for side in sides]
    return window.kernel, window.stride, window.dilation, flat_padding, _backward_index_dtype(input, dims)


def max_pool_nd(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, pad_value):
    """seqkern.functional.max_pool{dims}d: torch's semantics, checks and messages, plus
    padding="same" / "valid" / per-axis (before, after) pairs and a pad_value."""
    key = _geometry_key(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, pad_value)
    geometry = None if key is None else _GEOMETRIES.get(key)
    if geometry is None:
        geometry = _checked_geometry(dims, input, kernel_size, stride, padding, dilation, ceil_mode,
                                     return_indices, pad_value)
        if key is not None:
            if len(_GEOMETRIES) >= _MAX_GEOMETRIES:
                _GEOMETRIES.clear()
            _GEOMETRIES[key] = geometry
    kernel, stride, dilation, flat_padding, backward_index_dtype = geometry
    # The caller's own value: equal keys may hold another (0.0 and -0.0, 2 and 2.0).
    pad_value = float(pad_value)
    # int64 for indices the caller gets, the backward dtype where only backward reads them,
    # none for inference.
    if return_indices:
        index_dtype = torch.int64
    elif input.requires_grad and torch.is_grad_enabled():
        index_dtype = backward_index_dtype
    else:
        index_dtype = None
    batched = input.dim() == dims + 2
    pool = op_entry(max_pool, _direct_max_pool, (input,))
    output, indices = pool(input if batched else input.unsqueeze(0), kernel, stride, dilation, flat_padding,
                           ceil_mode, pad_value, index_dtype)
    if not batched:
        output, indices = output.squeeze(0), indices.squeeze(0) if return_indices else indices
    return (output, indices) if return_indices else output
