"""Recurrent ops: one layer in one direction over a whole sequence, forward and BPTT.

Dimension legend
  T  time steps                 B  batch
  I  input features             H  hidden units
  P  LSTM projection size       Hout = P if a projection is given, else H
  G  gate blocks of the cell    W  workspace width per step (``workspace_width``)

Cells (``../shared/SPEC.md``), with their gate blocks in torch's row order:
  rnn_tanh, rnn_relu   G=1
  lstm                 G=4  (i, f, g, o)
  lstm_coupled         G=3  (f, g, o); the input gate is 1 - f
  gru                  G=3  (r, z, n); reset applied after the hidden matmul (torch, cuDNN)
  gru_reset_before     G=3  (r, z, n); reset applied to h before the matmul (Cho et al.)
Peephole connections are not a cell of their own: they are on when ``w_peep`` is given
(LSTM cells only; rows (i, f, o), or (f, o) for lstm_coupled).

Workspace (T, B, W): written by forward, read by backward. Every backend uses this layout,
so that what one step of backward needs is never recomputed from scratch:
  rnn_*              [h_t (H)]                                          W = H
  lstm*              [activated gates (G*H) | c_t (H)]                  W = (G+1)*H
  gru                [activated r, z, n (3H) | h_{t-1} W_hnᵀ + b_hn (H)]  W = 4H
  gru_reset_before   [activated r, z, n (3H) | r ⊙ h_{t-1} (H)]         W = 4H
Steps a sequence does not reach (t >= lengths[b]) hold zeros in workspace and output;
the state of such a sequence stays frozen and is what h_n / c_n report.

Every backend (``seqkern._backend``) implements, with exactly these arguments:
  recurrent_layer_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths,
                          cell, reverse) -> (output, h_n, c_n, workspace)
  recurrent_layer_backward(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh,
                           b_ih, b_hh, w_hr, w_peep, lengths, output, workspace, cell,
                           reverse, need_input_grad, need_weight_grad)
      -> (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh,
          grad_w_hr, grad_w_peep)
Absent tensors (c_n and grad_c0 of non-LSTM cells, gradients of missing or unneeded
arguments) are returned as empty tensors of shape (0,).

The ops ``seqkern::recurrent_layer`` and ``seqkern::recurrent_layer_backward`` take the same
arguments. ``seqkern::recurrent_cell(input (B, I), h, c, w_ih, w_hh, b_ih, b_hh, w_peep, cell)
-> (h', c')`` is one step of a cell: the layer op at T = 1 (c' is (0,) without a cell state). Their schemas, CPU kernels and autograd are C++ (csrc/recurrent_op.cpp, registered
when seqkern._C loads), so a CPU training step runs no Python between ``seqkern.functional``
and the kernels. This module adds the fake kernels (torch.compile), the CUDA kernels (Triton),
the torch.vmap batching rules and the function the CPU kernels hand over to while
SEQKERN_BACKEND is set.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _backend
from ..reference import CELL_GATES, LSTM_CELLS, workspace_width


def _shape_str(shape) -> str:
    return str(tuple(shape))


def _expect_shape(name: str, tensor: Optional[Tensor], shape) -> None:
    if tensor is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(
            f"seqkern recurrent layer: {name} must have shape {_shape_str(shape)}, "
            f"got {_shape_str(tensor.shape)}"
        )


def check_layer_arguments(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell):
    """Validate one layer's arguments; the messages name the argument and both shapes."""
    if cell not in CELL_GATES:
        raise ValueError(
            f"seqkern recurrent layer: unknown cell {cell!r}; expected one of {', '.join(CELL_GATES)}"
        )
    if input.dim() != 3:
        raise ValueError(
            f"seqkern recurrent layer: input must be 3-D (T, B, I), got {input.dim()}-D"
        )
    if not input.dtype.is_floating_point:
        raise ValueError(f"seqkern recurrent layer: input must be floating point, got {input.dtype}")
    steps, batch, input_size = input.shape
    gates = CELL_GATES[cell]
    if w_ih.dim() != 2 or w_ih.shape[0] % gates != 0:
        raise ValueError(
            f"seqkern recurrent layer: w_ih must be 2-D with a multiple of {gates} rows for "
            f"cell {cell!r}, got {_shape_str(w_ih.shape)}"
        )
    hidden = w_ih.shape[0] // gates
    out_size = hidden
    if w_hr is not None:
        if cell not in LSTM_CELLS:
            raise ValueError("seqkern recurrent layer: w_hr (projection) is only supported for LSTM cells")
        if w_hr.dim() != 2 or w_hr.shape[1] != hidden:
            raise ValueError(
                f"seqkern recurrent layer: w_hr must have shape (P, {hidden}), got {_shape_str(w_hr.shape)}"
            )
        out_size = w_hr.shape[0]
    _expect_shape("w_ih", w_ih, (gates * hidden, input_size))
    _expect_shape("w_hh", w_hh, (gates * hidden, out_size))
    _expect_shape("b_ih", b_ih, (gates * hidden,))
    _expect_shape("b_hh", b_hh, (gates * hidden,))
    _expect_shape("h0", h0, (batch, out_size))
    if cell in LSTM_CELLS:
        if c0 is None:
            raise ValueError(f"seqkern recurrent layer: cell {cell!r} needs c0 of shape ({batch}, {hidden})")
        _expect_shape("c0", c0, (batch, hidden))
    elif c0 is not None:
        raise ValueError(f"seqkern recurrent layer: cell {cell!r} has no cell state, but c0 was given")
    if w_peep is not None:
        if cell not in LSTM_CELLS:
            raise ValueError("seqkern recurrent layer: w_peep (peephole) is only supported for LSTM cells")
        _expect_shape("w_peep", w_peep, (3 if cell == "lstm" else 2, hidden))
    for name, tensor in (("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih),
                         ("b_hh", b_hh), ("w_hr", w_hr), ("w_peep", w_peep)):
        if tensor is None:
            continue
        if tensor.dtype != input.dtype:
            raise ValueError(
                f"seqkern recurrent layer: {name} has dtype {tensor.dtype}, but input has {input.dtype}"
            )
        if tensor.device != input.device:
            raise ValueError(
                f"seqkern recurrent layer: {name} is on {tensor.device}, but input is on {input.device}"
            )
    if lengths is not None:
        if lengths.dtype != torch.int64 or tuple(lengths.shape) != (batch,):
            raise ValueError(
                f"seqkern recurrent layer: lengths must be an int64 tensor of shape ({batch},), "
                f"got {lengths.dtype} {_shape_str(lengths.shape)}"
            )
        if lengths.device != input.device:
            raise ValueError(
                f"seqkern recurrent layer: lengths is on {lengths.device}, but input is on {input.device}"
            )
    return steps, batch, input_size, hidden, out_size


def _forward_on_backend(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse):
    """seqkern::recurrent_layer on the backend ``_backend`` picks: the CUDA kernel, and the CPU
    kernel while SEQKERN_BACKEND is set (without it the C++ kernel runs with no Python)."""
    check_layer_arguments(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell)
    forward = _backend.implementation("recurrent", "recurrent_layer_forward", input.device)
    return tuple(forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse))


def _backward_on_backend(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                         w_peep, lengths, output, workspace, cell, reverse, need_input_grad,
                         need_weight_grad):
    """seqkern::recurrent_layer_backward on the backend ``_backend`` picks."""
    backward = _backend.implementation("recurrent", "recurrent_layer_backward", input.device)
    return tuple(
        backward(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                 w_peep, lengths, output, workspace, cell, reverse, need_input_grad, need_weight_grad)
    )


def _recurrent_layer_fake(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse):
    steps, batch, _, hidden, out_size = check_layer_arguments(
        input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell
    )
    output = input.new_empty((steps, batch, out_size))
    h_n = input.new_empty((batch, out_size))
    c_n = input.new_empty((batch, hidden)) if cell in LSTM_CELLS else input.new_empty((0,))
    workspace = input.new_empty((steps, batch, workspace_width(cell, hidden)))
    return output, h_n, c_n, workspace


def _recurrent_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih,
                                   b_hh, w_hr, w_peep, lengths, output, workspace, cell, reverse,
                                   need_input_grad, need_weight_grad):
    def like(tensor, wanted=True):
        return torch.empty_like(tensor) if tensor is not None and wanted else input.new_empty((0,))

    return (
        like(input, need_input_grad),
        like(h0),
        like(c0),
        like(w_ih, need_weight_grad),
        like(w_hh, need_weight_grad),
        like(b_ih, need_weight_grad),
        like(b_hh, need_weight_grad),
        like(w_hr, need_weight_grad),
        like(w_peep, need_weight_grad),
    )


def _fold_vmapped(tensor, dim, batch_axis, count):
    """A vmapped tensor with its vmapped dimension (``dim``; None: shared, so repeated
    ``count`` times) merged into ``batch_axis``, the samples of one member next to each other."""
    if tensor is None:
        return None
    if dim is None:
        tensor = tensor.unsqueeze(batch_axis).expand(*tensor.shape[:batch_axis], count, *tensor.shape[batch_axis:])
    else:
        tensor = tensor.movedim(dim, batch_axis)
    return tensor.flatten(batch_axis, batch_axis + 1)


def _vmap_per_member(op, count, tensors, in_dims, constants):
    """Vmapped weights (an ensemble): one fused-kernel call per member, the outputs stacked;
    about the speed of torch's per-sample fallback, without its performance warning."""
    def member(index):
        return [None if tensor is None else tensor if dim is None else tensor.select(dim, index)
                for tensor, dim in zip(tensors, in_dims)]
    results = [op(*member(index), *constants) for index in range(count)]
    outputs = tuple(torch.stack(values) for values in zip(*results))
    return outputs, (0,) * len(outputs)


def _recurrent_layer_vmap(info, in_dims, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell,
                          reverse):
    """torch.vmap of seqkern::recurrent_layer: with shared weights the vmapped dimension joins
    the batch, one kernel call for all samples."""
    count = info.batch_size
    tensors = (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths)
    if any(dim is not None for dim in in_dims[3:9]):
        return _vmap_per_member(recurrent_layer, count, tensors, in_dims[:10], (cell, reverse))
    folded = _fold_vmapped(input, in_dims[0], 1, count)
    output, h_n, c_n, workspace = recurrent_layer(
        folded, _fold_vmapped(h0, in_dims[1], 0, count), _fold_vmapped(c0, in_dims[2], 0, count), w_ih, w_hh,
        b_ih, b_hh, w_hr, w_peep, _fold_vmapped(lengths, in_dims[9], 0, count), cell, reverse)
    batch = (count, folded.shape[1] // count)
    # Without a cell state c_n is (0,), the same for every sample; so is the workspace where the
    # op ran as ATen ops (under an outer transform, grad(vmap(...))), which keep none.
    c_n, c_n_dim = (c_n, None) if c0 is None else (c_n.unflatten(0, batch), 0)
    workspace, workspace_dim = (workspace, None) if workspace.dim() < 3 else (workspace.unflatten(1, batch), 1)
    return ((output.unflatten(1, batch), h_n.unflatten(0, batch), c_n, workspace),
            (1, 0, c_n_dim, workspace_dim))


def _recurrent_cell_vmap(info, in_dims, input, h, c, w_ih, w_hh, b_ih, b_hh, w_peep, cell):
    """torch.vmap of seqkern::recurrent_cell, as of the layer op: one call for all samples."""
    count = info.batch_size
    tensors = (input, h, c, w_ih, w_hh, b_ih, b_hh, w_peep)
    if any(dim is not None for dim in in_dims[3:8]):
        return _vmap_per_member(recurrent_cell, count, tensors, in_dims[:8], (cell,))
    folded = _fold_vmapped(input, in_dims[0], 0, count)
    h_new, c_new = recurrent_cell(folded, _fold_vmapped(h, in_dims[1], 0, count),
                                  _fold_vmapped(c, in_dims[2], 0, count), w_ih, w_hh, b_ih, b_hh, w_peep, cell)
    batch = (count, folded.shape[0] // count)
    c_new, c_dim = (c_new, None) if c is None else (c_new.unflatten(0, batch), 0)
    return (h_new.unflatten(0, batch), c_new), (0, c_dim)


# The schemas, the CPU kernels and autograd are registered in C++ (csrc/recurrent_op.cpp) when
# seqkern._C loads; this module adds what must be Python. Without the extension the ops do not
# exist, and calling them says how to build it.
try:
    _C = _backend.load_cpp()
except _backend.BackendUnavailableError as error:
    recurrent_layer = recurrent_layer_backward = recurrent_cell = direct_recurrent_layer = direct_recurrent_cell = (
        _backend.extension_missing(error))
else:
    _C._set_recurrent_override(_forward_on_backend, _backward_on_backend)
    torch.library.register_fake("seqkern::recurrent_layer")(_recurrent_layer_fake)
    torch.library.register_fake("seqkern::recurrent_layer_backward")(_recurrent_layer_backward_fake)
    torch.library.register_kernel("seqkern::recurrent_layer", "cuda", _forward_on_backend)
    torch.library.register_kernel("seqkern::recurrent_layer_backward", "cuda", _backward_on_backend)
    torch.library.register_vmap("seqkern::recurrent_layer")(_recurrent_layer_vmap)
    torch.library.register_vmap("seqkern::recurrent_cell")(_recurrent_cell_vmap)
    recurrent_layer = torch.ops.seqkern.recurrent_layer.default
    recurrent_layer_backward = torch.ops.seqkern.recurrent_layer_backward.default
    recurrent_cell = torch.ops.seqkern.recurrent_cell.default
    # The same ops from seqkern._C's entry points (seqkern/ops/_entry.py).
    direct_recurrent_layer = _C._recurrent_layer_call
    direct_recurrent_cell = _C._recurrent_cell_call
