"""Max pooling 1d/2d/3d: Triton kernels and their launchers (the "triton" backend).

Dimension legend
  N, C          batch, channels
  D, H, W       input spatial sizes; 1-d and 2-d pools run as 3-d pools with D = H = 1 or
                D = 1 and a kernel of 1 there
  OD, OH, OW    output spatial sizes
  plane         the D*H*W input elements of one (n, c); indices are flat offsets in it
  BLOCK         output (forward) or input (backward) elements per program

Layouts: every tensor is dense, contiguous (N, C, D, H, W) or channels_last
(N, D, H, W, C); programs walk elements in memory order so that neighbouring lanes load
and store neighbouring addresses.

Offsets: in-kernel index arithmetic is 32-bit (64-bit division per lane would cost
register spills). The launchers keep that exact by splitting a call into launches over
batch (and, for contiguous tensors, channel) ranges whose tensors each span fewer than
2**31 elements; each launch gets 64-bit base pointers from its tensor views.

Forward: one lane per output element visits its window's taps in (kd, kh, kw) order; a
tap replaces the running maximum when strictly greater or NaN (first maximum wins, the
last NaN gives the index), starting from the dtype's lowest value and the window's first
in-bounds position. Padded taps take part only with a finite pad_value (index -1).

Backward is a gather, so it needs no atomics and is deterministic: one lane per input
element sums the output gradients whose argmax is that element, in increasing output
order (torch's scatter order), accumulating in fp32 (fp64 for fp64).

COMPILE_CONFIGURATIONS lists the kernel variants to compile ahead of time for GPU
targets (tests/test_triton_compile.py): dicts with
  name        a label
  fn          the @triton.jit kernel
  signature   {argument: type string}: "*fp32" pointer, "i32" scalar, "constexpr"
  constexprs  {argument: value} for the "constexpr" arguments
  num_warps   warps per program
"""
import math

import torch
import triton
import triton.language as tl

from seqkern.ops.pooling import memory_format_of, output_size

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _element_position(offsets, C, D, H, W, CHANNELS_LAST: tl.constexpr):
    """(n, c, d, h, w) of flat element offsets in a dense (N, C, D, H, W) tensor of either layout."""
    if CHANNELS_LAST:
        c = offsets % C
        rest = offsets // C
    else:
        rest = offsets
    w, rest = rest % W, rest // W
    h, rest = rest % H, rest // H
    d, rest = rest % D, rest // D
    if not CHANNELS_LAST:
        c, rest = rest % C, rest // C
    return rest, c, d, h, w


@triton.jit
def _tap_axes(tap, kernel_h, kernel_w):
    """(kd, kh, kw) of a tap counted in (kd, kh, kw) order."""
    window_hw = kernel_h * kernel_w
    return tap // window_hw, tap % window_hw // kernel_w, tap % kernel_w


@triton.jit
def _first_inside(start, size, kernel, dilation):
    """Along one axis: the first in-bounds tap of windows that start at `start` (may be
    before 0), and whether the window reaches it."""
    first = tl.where(start < 0, start + (dilation - 1 - start) // dilation * dilation, start)
    return first, (first < size) & (first <= start + (kernel - 1) * dilation)


@triton.jit
def _output_with_tap(position, k, before, dilation, stride, out_size):
    """Along one axis: the output whose tap k is input `position`, and whether it exists."""
    scaled = position + before - k * dilation
    o = scaled // stride
    return o, (scaled >= 0) & (o * stride == scaled) & (o < out_size)


@triton.jit
def max_pool_forward_kernel(
    input_ptr,  # (N, C, D, H, W), element strides in_stride_*
    output_ptr,  # (N, C, OD, OH, OW), element strides out_stride_*
    indices_ptr,  # int64 or int32, laid out like output; untouched unless NEED_INDICES
    pad_ptr,  # (2,) in the compute dtype: [pad value, lowest value of the input dtype]
    total,  # N * C * OD * OH * OW
    C, D, H, W, OD, OH, OW,
    in_stride_n, in_stride_c, in_stride_d, in_stride_h, in_stride_w,
    out_stride_n, out_stride_c, out_stride_d, out_stride_h, out_stride_w,
    kernel_d, kernel_h, kernel_w,
    stride_d, stride_h, stride_w,
    dilation_d, dilation_h, dilation_w,
    before_d, before_h, before_w,
    extent_d, extent_h, extent_w,  # size + padding after: taps from here on take no part
    PAD_COMPETES: tl.constexpr,  # finite pad_value: padded taps take part
    CHANNELS_LAST: tl.constexpr,
    NEED_INDICES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offsets < total
    n, c, od, oh, ow = _element_position(offsets, C, OD, OH, OW, CHANNELS_LAST)
    start_d = od * stride_d - before_d
    start_h = oh * stride_h - before_h
    start_w = ow * stride_w - before_w
    # The window's first in-bounds position is its index until a tap beats the lowest value.
    first_d, has_first_d = _first_inside(start_d, D, kernel_d, dilation_d)
    first_h, has_first_h = _first_inside(start_h, H, kernel_h, dilation_h)
    first_w, has_first_w = _first_inside(start_w, W, kernel_w, dilation_w)
    best_index = tl.where(has_first_d & has_first_h & has_first_w, (first_d * H + first_h) * W + first_w, -1)
    pad = tl.load(pad_ptr)
    best = tl.zeros([BLOCK], pad_ptr.dtype.element_ty) + tl.load(pad_ptr + 1)
    plane_ptr = input_ptr + n * in_stride_n + c * in_stride_c
    # One flat loop over the taps in (kd, kh, kw) order keeps the control flow simple.
    for tap in range(0, kernel_d * kernel_h * kernel_w):
        kd, kh, kw = _tap_axes(tap, kernel_h, kernel_w)
        d = start_d + kd * dilation_d
        h = start_h + kh * dilation_h
        w = start_w + kw * dilation_w
        inside = (d >= 0) & (d < D) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        value = tl.load(plane_ptr + d * in_stride_d + h * in_stride_h + w * in_stride_w,
                        mask=live & inside, other=0).to(best.dtype)
        index = (d * H + h) * W + w
        if PAD_COMPETES:
            takes_part = inside | ((d < extent_d) & (h < extent_h) & (w < extent_w))
            value = tl.where(inside, value, pad)
            index = tl.where(inside, index, -1)
        else:
            takes_part = inside
        replace = takes_part & ((value > best) | (value != value))
        best = tl.where(replace, value, best)
        best_index = tl.where(replace, index, best_index)
    out_offsets = n * out_stride_n + c * out_stride_c + od * out_stride_d + oh * out_stride_h + ow * out_stride_w
    tl.store(output_ptr + out_offsets, best.to(output_ptr.dtype.element_ty), mask=live)
    if NEED_INDICES:
        tl.store(indices_ptr + out_offsets, best_index.to(indices_ptr.dtype.element_ty), mask=live)


@triton.jit
def max_pool_backward_kernel(
    grad_output_ptr,  # (N, C, OD, OH, OW), element strides out_stride_*
    indices_ptr,  # int64 or int32, laid out like grad_output
    grad_input_ptr,  # (N, C, D, H, W), element strides in_stride_*
    total,  # N * C * D * H * W
    C, D, H, W, OD, OH, OW,
    in_stride_n, in_stride_c, in_stride_d, in_stride_h, in_stride_w,
    out_stride_n, out_stride_c, out_stride_d, out_stride_h, out_stride_w,
    kernel_d, kernel_h, kernel_w,
    stride_d, stride_h, stride_w,
    dilation_d, dilation_h, dilation_w,
    before_d, before_h, before_w,
    CHANNELS_LAST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offsets < total
    n, c, d, h, w = _element_position(offsets, C, D, H, W, CHANNELS_LAST)
    flat = (d * H + h) * W + w
    if grad_input_ptr.dtype.element_ty == tl.float64:
        total_grad = tl.zeros([BLOCK], tl.float64)
    else:
        total_grad = tl.zeros([BLOCK], tl.float32)
    plane_offset = n * out_stride_n + c * out_stride_c
    # Taps from last to first: the outputs that see this element, in increasing order.
    window = kernel_d * kernel_h * kernel_w
    for tap_reversed in range(0, window):
        kd, kh, kw = _tap_axes(window - 1 - tap_reversed, kernel_h, kernel_w)
        od, valid_d = _output_with_tap(d, kd, before_d, dilation_d, stride_d, OD)
        oh, valid_h = _output_with_tap(h, kh, before_h, dilation_h, stride_h, OH)
        ow, valid_w = _output_with_tap(w, kw, before_w, dilation_w, stride_w, OW)
        valid = live & valid_d & valid_h & valid_w
        out_offsets = plane_offset + od * out_stride_d + oh * out_stride_h + ow * out_stride_w
        argmax = tl.load(indices_ptr + out_offsets, mask=valid, other=-1)
        grad = tl.load(grad_output_ptr + out_offsets, mask=valid & (argmax == flat), other=0)
        total_grad += grad.to(total_grad.dtype)
    in_offsets = n * in_stride_n + c * in_stride_c + d * in_stride_d + h * in_stride_h + w * in_stride_w
    tl.store(grad_input_ptr + in_offsets, total_grad.to(grad_input_ptr.dtype.element_ty), mask=live)


_INT32_SPAN = 2**31 - 1


def _as_3d(tensor):
    """(N, C, *S) -> a (N, C, D, H, W) view; missing leading spatial axes get size 1."""
    while tensor.dim() < 5:
        tensor = tensor.unsqueeze(2)
    return tensor


def _axes_3d(values, fill):
    return [fill] * (3 - len(values)) + list(values)


def _launch_ranges(view_in, view_out, channels_last):
    """(batch slice, channel slice) per launch over (N, C, D, H, W) views of the input-side
    and output-side tensors, so that each launch's tensors span fewer than 2**31 elements."""
    batch, channels = view_in.shape[:2]
    plane_span = max(math.prod(view_in.shape[2:]), math.prod(view_out.shape[2:]))
    sample_span = plane_span * channels
    if sample_span <= _INT32_SPAN:
        step = max(1, _INT32_SPAN // max(1, sample_span))
        return [(slice(n, n + step), slice(None)) for n in range(0, batch, step)]
    if channels_last or plane_span > _INT32_SPAN:
        raise ValueError(
            f"seqkern max_pool (Triton): a {'sample' if channels_last else '(n, c) plane'} of "
            f"{sample_span if channels_last else plane_span} elements is beyond the 2**31 elements one launch "
            "addresses; use the contiguous layout or split the input"
        )
    step = _INT32_SPAN // plane_span
    return [(slice(n, n + 1), slice(c, c + step)) for n in range(batch) for c in range(0, channels, step)]


def _shape_arguments(total, part_in, part_out):
    """The kernels' arguments named in _SHAPE_ARGUMENTS, for one launch's (N, C, D, H, W)
    input-side and output-side views."""
    return (total, part_in.shape[1], *part_in.shape[2:], *part_out.shape[2:], *part_in.stride(), *part_out.stride())


def _window_arguments(kernel_size, stride, dilation, padding):
    """The kernels' arguments named in _WINDOW_ARGUMENTS."""
    return (*_axes_3d(kernel_size, 1), *_axes_3d(stride, 1), *_axes_3d(dilation, 1),
            *_axes_3d([before for before, _ in padding], 0))


def _compute_dtype(dtype):
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if dtype.is_floating_point:
        return dtype
    return torch.int64


def _lowest(dtype):
    return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min


def max_pool_forward(input, kernel_size, stride, dilation, padding, ceil_mode, pad_value, index_dtype):
    out_sizes = [
        output_size(length, k, s, d, before, after, ceil_mode)
        for length, k, s, d, (before, after) in zip(input.shape[2:], kernel_size, stride, dilation, padding)
    ]
    layout = memory_format_of(input)
    channels_last = layout != torch.contiguous_format
    shape = (*input.shape[:2], *out_sizes)
    output = torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=layout)
    need_indices = index_dtype is not None
    if need_indices:
        indices = torch.empty(shape, dtype=index_dtype, device=input.device, memory_format=layout)
    else:
        indices = torch.empty((0,), dtype=torch.int64, device=input.device)
    if output.numel() == 0:
        return output, indices
    pad_competes = pad_value != -math.inf
    # On the device without a host round trip: [pad value, lowest value].
    pad = torch.full((2,), _lowest(input.dtype), dtype=_compute_dtype(input.dtype), device=input.device)
    if pad_competes:
        pad[0] = pad_value
    view_in, view_out = _as_3d(input), _as_3d(output)
    view_indices = _as_3d(indices) if need_indices else None
    window = _window_arguments(kernel_size, stride, dilation, padding)
    extents = [size + after for size, after in zip(view_in.shape[2:], _axes_3d([a for _, a in padding], 0))]
    for batch, channels in _launch_ranges(view_in, view_out, channels_last):
        part_in, part_out = view_in[batch, channels], view_out[batch, channels]
        total = part_out.numel()
        max_pool_forward_kernel[(triton.cdiv(total, BLOCK),)](
            part_in, part_out, view_indices[batch, channels] if need_indices else indices, pad,
            *_shape_arguments(total, part_in, part_out), *window, *extents,
            PAD_COMPETES=pad_competes, CHANNELS_LAST=channels_last, NEED_INDICES=need_indices, BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return output, indices


def max_pool_backward(grad_output, indices, input_size, kernel_size, stride, dilation, padding):
    layout = memory_format_of(indices)
    channels_last = layout != torch.contiguous_format
    # The kernel reads both with one set of strides.
    grad_output, indices = grad_output.contiguous(memory_format=layout), indices.contiguous(memory_format=layout)
    grad_input = torch.empty(input_size, dtype=grad_output.dtype, device=grad_output.device, memory_format=layout)
    if grad_input.numel() == 0:
        return grad_input
    if grad_output.numel() == 0:
        return grad_input.zero_()
    view_in, view_out, view_indices = _as_3d(grad_input), _as_3d(grad_output), _as_3d(indices)
    window = _window_arguments(kernel_size, stride, dilation, padding)
    for batch, channels in _launch_ranges(view_in, view_out, channels_last):
        part_in, part_out = view_in[batch, channels], view_out[batch, channels]
        total = part_in.numel()
        max_pool_backward_kernel[(triton.cdiv(total, BLOCK),)](
            part_out, view_indices[batch, channels], part_in,
            *_shape_arguments(total, part_in, part_out), *window,
            CHANNELS_LAST=channels_last, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )
    return grad_input


def _signature(pointers, scalars, constexprs):
    signature = dict(pointers)
    signature.update({name: "i32" for name in scalars})
    signature.update({name: "constexpr" for name in constexprs})
    return signature


_SHAPE_ARGUMENTS = ["total", "C", "D", "H", "W", "OD", "OH", "OW"] + [
    f"{kind}_stride_{axis}" for kind in ("in", "out") for axis in "ncdhw"]
_WINDOW_ARGUMENTS = [f"{name}_{axis}" for name in ("kernel", "stride", "dilation", "before") for axis in "dhw"]

COMPILE_CONFIGURATIONS = [
    {
        "name": f"max_pool_forward_{data}_{'channels_last' if channels_last else 'contiguous'}"
                f"{f'_indices_{index}' if need_indices else ''}{'_pad' if pad_competes else ''}",
        "fn": max_pool_forward_kernel,
        "signature": _signature(
            {"input_ptr": f"*{data}", "output_ptr": f"*{data}", "indices_ptr": f"*{index}", "pad_ptr": f"*{compute}"},
            _SHAPE_ARGUMENTS + _WINDOW_ARGUMENTS + [f"extent_{axis}" for axis in "dhw"],
            ("PAD_COMPETES", "CHANNELS_LAST", "NEED_INDICES", "BLOCK")),
        "constexprs": {"PAD_COMPETES": pad_competes, "CHANNELS_LAST": channels_last, "NEED_INDICES": need_indices,
                       "BLOCK": BLOCK},
        "num_warps": NUM_WARPS,
    }
    for data, compute, channels_last, need_indices, index, pad_competes in (
        ("fp32", "fp32", False, True, "i64", False),
        ("fp32", "fp32", False, True, "i32", False),
        ("fp32", "fp32", False, False, "i64", False),
        ("fp32", "fp32", True, True, "i32", False),
        ("fp32", "fp32", True, False, "i64", True),
        ("bf16", "fp32", False, True, "i32", True),
        ("fp16", "fp32", True, True, "i64", False),
        ("fp64", "fp64", False, True, "i64", False),
        ("i8", "i64", True, False, "i64", False),
    )
] + [
    {
        "name": f"max_pool_backward_{data}_{'channels_last' if channels_last else 'contiguous'}_{index}",
        "fn": max_pool_backward_kernel,
        "signature": _signature(
            {"grad_output_ptr": f"*{data}", "indices_ptr": f"*{index}", "grad_input_ptr": f"*{data}"},
            _SHAPE_ARGUMENTS + _WINDOW_ARGUMENTS, ("CHANNELS_LAST", "BLOCK")),
        "constexprs": {"CHANNELS_LAST": channels_last, "BLOCK": BLOCK},
        "num_warps": NUM_WARPS,
    }
    for data, channels_last, index in (("fp32", False, "i32"), ("fp32", True, "i32"), ("fp32", False, "i64"),
                                       ("bf16", False, "i32"), ("fp16", True, "i64"), ("fp64", False, "i64"))
]
