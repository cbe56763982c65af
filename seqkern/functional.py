"""Functional forms of the seqkern ops (recurrent layers and cells, max pooling).

Recurrent layers
----------------
``rnn``, ``lstm`` and ``gru`` run a whole stack: per layer and direction one call of
``torch.ops.seqkern.recurrent_layer`` over the whole sequence, the directions concatenated
on the feature axis, dropout between layers. Their arguments follow ``torch._VF.lstm``:

    input     (T, B, I), or (B, T, I) with ``batch_first``, or a ``PackedSequence``
    hx        initial state(s) (L*D, B, Hout) [and (L*D, B, H) for LSTM], or None for zeros;
              for packed input in the caller's batch order (as ``torch.nn`` takes them)
    weights   flat sequence in ``torch.nn``'s ``_flat_weights`` order: for each layer, for
              each direction (forward first): w_ih, w_hh, [b_ih, b_hh], [w_hr], [w_peep]

and they return what the ``torch.nn`` module returns: (output, h_n) or (output, (h_n, c_n)),
a ``PackedSequence`` output for packed input. L = num_layers, D = 2 if bidirectional else 1,
Hout = P with an LSTM projection, else H.

Packed input runs as one padded (T, B, I) tensor in sorted batch order plus a ``lengths``
vector; the op freezes each sequence's state after its last step and writes zeros past it.

Cells (``rnn_cell``, ``lstm_cell``, ``gru_cell``) take (B, I) input and (B, H) states and
run the op ``seqkern::recurrent_cell``, the layer op at T = 1.
"""
from __future__ import annotations

import math as _math
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ._names import cpp_type_name, python_type_name, scalar_type_name
from .ops import pooling as _pooling
from .ops import recurrent as _recurrent
from .ops._entry import op_entry as _op_entry

__all__ = ["rnn", "lstm", "gru", "rnn_cell", "lstm_cell", "gru_cell", "max_pool1d", "max_pool2d", "max_pool3d"]


def _check_matmul_dtypes(left: Tensor, right: Tensor, with_bias: bool) -> None:
    """torch's RNNs fail in their first matmul when a state or input has another dtype
    than the weights; the same error, raised before any work is done. A product with a bias
    is ATen's addmm, one without is its mm, and their messages differ."""
    if left.dtype == right.dtype:
        return
    if with_bias:
        raise RuntimeError(
            f"mat1 and mat2 must have the same dtype, but got {scalar_type_name(left.dtype)} "
            f"and {scalar_type_name(right.dtype)}"
        )
    raise RuntimeError(
        f"expected m1 and m2 to have the same dtype, but got: {cpp_type_name(left.dtype)} != "
        f"{cpp_type_name(right.dtype)}"
    )


def _check_cell_state_dtype(cell_state: Tensor, input: Tensor) -> None:
    if cell_state.dtype != input.dtype:
        raise RuntimeError(
            f"LSTM cell state dtype ({cell_state.dtype}) does not match input dtype "
            f"({input.dtype}); seqkern does not promote states, convert one of them"
        )


def _nonlinearity_cell(nonlinearity: str) -> str:
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return "rnn_" + nonlinearity


def _lstm_cell_name(coupled_gates: bool) -> str:
    return "lstm_coupled" if coupled_gates else "lstm"


def _gru_cell_name(reset_after: bool) -> str:
    return "gru" if reset_after else "gru_reset_before"


class _PackedLayout:
    """Where the rows of packed data sit in a padded (T, B) grid, computed once per call.

    Packed data is time-major: the rows of step t are sequences 0 .. batch_sizes[t]-1 of the
    sorted batch, so the packed rows are exactly the present cells of the grid in row-major
    order.
    """

    def __init__(self, batch_sizes: Tensor, device: torch.device):
        self.steps = batch_sizes.numel()
        self.batch = int(batch_sizes[0])
        present = torch.arange(self.batch) < batch_sizes.unsqueeze(1)  # (T, B)
        self.rows = present.reshape(-1).nonzero().squeeze(1).to(device)
        self.lengths = present.sum(0).to(device=device, dtype=torch.int64)

    def pad(self, data: Tensor) -> Tensor:
        """(N, F) packed rows -> (T, B, F), zeros where a sequence has ended."""
        grid = data.new_zeros((self.steps * self.batch, data.size(1)))
        return grid.index_copy(0, self.rows, data).view(self.steps, self.batch, data.size(1))

    def pack(self, padded: Tensor) -> Tensor:
        """(T, B, F) -> (N, F) packed rows."""
        return padded.reshape(self.steps * self.batch, padded.size(2)).index_select(0, self.rows)


def _layer_weights(weights: Sequence[Tensor], count: int, has_biases: bool, projection: bool,
                   peephole: bool):
    """Split the flat weight list into (w_ih, w_hh, b_ih, b_hh, w_hr, w_peep) per layer-direction."""
    per_layer = 2 + 2 * has_biases + projection + peephole
    if len(weights) != count * per_layer:
        raise ValueError(
            f"seqkern recurrent stack: expected {count * per_layer} weights "
            f"({count} layer-directions x {per_layer}), got {len(weights)}"
        )
    groups = []
    for index in range(count):
        group = list(weights[index * per_layer:(index + 1) * per_layer])
        w_ih, w_hh = group[0], group[1]
        b_ih, b_hh = (group[2], group[3]) if has_biases else (None, None)
        w_hr = group[2 + 2 * has_biases] if projection else None
        w_peep = group[-1] if peephole else None
        groups.append((w_ih, w_hh, b_ih, b_hh, w_hr, w_peep))
    return groups


def _contiguous(tensor: Optional[Tensor]) -> Optional[Tensor]:
    return None if tensor is None else tensor.contiguous()


def _stack_states(states):
    """(layers x directions, B, size) from each layer-direction's final state; a lone
    layer-direction's comes back as a view, not a copy."""
    return states[0].unsqueeze(0) if len(states) == 1 else torch.stack(states)


def _run_stack(input, hx, cx, weights, cell, has_biases, num_layers, dropout, training,
               bidirectional, batch_first, peephole=False):
    """Shared body of rnn/lstm/gru; ``cx`` is None for cells without a cell state."""
    directions = 2 if bidirectional else 1
    count = num_layers * directions
    is_lstm = cell in _recurrent.LSTM_CELLS
    projection = is_lstm and len(weights) == count * (3 + 2 * has_biases + peephole)
    groups = _layer_weights(weights, count, has_biases, projection, peephole)

    packed = isinstance(input, PackedSequence)
    if packed:
        data, batch_sizes, sorted_indices, unsorted_indices = input
        layout = _PackedLayout(batch_sizes, data.device)
        sequence = layout.pad(data)
        lengths = layout.lengths
    else:
        sequence = input.transpose(0, 1) if batch_first else input
        sorted_indices = unsorted_indices = None
        lengths = None
    if sequence.size(0) == 0:
        raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
    steps, batch = sequence.shape[:2]

    first_w_ih, first_w_hh, _, _, first_w_hr, _ = groups[0]
    hidden = first_w_ih.size(0) // _recurrent.CELL_GATES[cell]
    out_size = first_w_hr.size(0) if projection else hidden
    if hx is None:
        # The op only reads its initial states, so every layer-direction starts from the same
        # zeros (h and c share them when they have one size): each tensor op costs a few
        # microseconds, as much as a time step at B = 1.
        h_zeros = sequence.new_zeros((batch, out_size))
        c_zeros = (h_zeros if out_size == hidden else sequence.new_zeros((batch, hidden))) if is_lstm else None
        initial_states = [(h_zeros, c_zeros)] * count
    else:
        _check_matmul_dtypes(hx, first_w_hh, has_biases)
        if is_lstm:
            _check_cell_state_dtype(cx, sequence)
        if sorted_indices is not None:
            # The states come in the caller's order; the packed batch is sorted by length.
            hx = hx.index_select(1, sorted_indices)
            if is_lstm:
                cx = cx.index_select(1, sorted_indices)
        initial_states = [(hx[index].contiguous(), cx[index].contiguous() if is_lstm else None)
                          for index in range(count)]

    layer_input = sequence.contiguous()
    layer_op = _op_entry(_recurrent.recurrent_layer, _recurrent.direct_recurrent_layer, (sequence, hx, cx, *weights))
    final_h, final_c = [], []
    for layer in range(num_layers):
        direction_outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, b_ih, b_hh, w_hr, w_peep = groups[index]
            h0, c0 = initial_states[index]
            output, h_n, c_n, _ = layer_op(
                layer_input, h0, c0,
                w_ih.contiguous(), w_hh.contiguous(), _contiguous(b_ih), _contiguous(b_hh),
                _contiguous(w_hr), _contiguous(w_peep), lengths, cell, direction == 1,
            )
            direction_outputs.append(output)
            final_h.append(h_n)
            final_c.append(c_n)
        layer_output = direction_outputs[0] if directions == 1 else torch.cat(direction_outputs, 2)
        if dropout != 0 and training and layer < num_layers - 1:
            layer_output = torch.dropout(layer_output, dropout, True)
        layer_input = layer_output

    h_n = _stack_states(final_h)
    c_n = _stack_states(final_c) if is_lstm else None
    if unsorted_indices is not None:
        h_n = h_n.index_select(1, unsorted_indices)
        if is_lstm:
            c_n = c_n.index_select(1, unsorted_indices)
    if packed:
        output = PackedSequence(layout.pack(layer_input), batch_sizes, sorted_indices, unsorted_indices)
    else:
        output = layer_input.transpose(0, 1) if batch_first else layer_input
    return output, h_n, c_n


def rnn(input, hx: Optional[Tensor], weights: Sequence[Tensor], has_biases: bool = True,
        num_layers: int = 1, dropout: float = 0.0, training: bool = False,
        bidirectional: bool = False, batch_first: bool = False, nonlinearity: str = "tanh"):
    """Elman RNN stack (``torch.nn.RNN``); returns (output, h_n)."""
    cell = _nonlinearity_cell(nonlinearity)
    output, h_n, _ = _run_stack(input, hx, None, weights, cell, has_biases, num_layers, dropout,
                                training, bidirectional, batch_first)
    return output, h_n


def lstm(input, hx, weights: Sequence[Tensor], has_biases: bool = True, num_layers: int = 1,
         dropout: float = 0.0, training: bool = False, bidirectional: bool = False,
         batch_first: bool = False, *, peephole: bool = False, coupled_gates: bool = False):
    """LSTM stack (``torch.nn.LSTM``); returns (output, (h_n, c_n)).

    ``hx`` is (h0, c0) or None. A projection is present when each layer-direction has one
    weight more than w_ih, w_hh, [biases], [w_peep]: that weight is w_hr (P, H).
    ``peephole`` adds w_peep, (3, H) rows (i, f, o), or (2, H) rows (f, o) with
    ``coupled_gates`` (whose gate weights have 3H rows f, g, o).
    """
    cell = _lstm_cell_name(coupled_gates)
    if hx is not None:
        # torch's argument parser takes a tuple or list of tensors here; where it matches no
        # overload of lstm() it lists them all, which says less than this.
        if not isinstance(hx, (tuple, list)) or not all(isinstance(state, Tensor) for state in hx):
            described = python_type_name(hx)
            if isinstance(hx, (tuple, list)):
                described += f" of [{', '.join(python_type_name(state) for state in hx)}]"
            raise TypeError(f"lstm(): argument 'hx' must be a tuple of two Tensors (h_0, c_0), not {described}")
        if len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
    h0, c0 = (None, None) if hx is None else hx
    output, h_n, c_n = _run_stack(input, h0, c0, weights, cell, has_biases, num_layers, dropout,
                                  training, bidirectional, batch_first, peephole)
    return output, (h_n, c_n)


def gru(input, hx: Optional[Tensor], weights: Sequence[Tensor], has_biases: bool = True,
        num_layers: int = 1, dropout: float = 0.0, training: bool = False,
        bidirectional: bool = False, batch_first: bool = False, *, reset_after: bool = True):
    """GRU stack (``torch.nn.GRU``); ``reset_after=False`` is Cho et al.'s original form."""
    output, h_n, _ = _run_stack(input, hx, None, weights, _gru_cell_name(reset_after), has_biases,
                                num_layers, dropout, training, bidirectional, batch_first)
    return output, h_n


def _check_cell_input(input: Tensor, w_ih: Tensor) -> None:
    if input.size(1) != w_ih.size(1):
        raise RuntimeError(
            f"input has inconsistent input_size: got {input.size(1)} expected {w_ih.size(1)}"
        )


def _check_cell_hidden(input: Tensor, state: Tensor, hidden_size: int, label: int) -> None:
    if input.size(0) != state.size(0):
        raise RuntimeError(
            f"Input batch size {input.size(0)} doesn't match hidden{label} batch size {state.size(0)}"
        )
    # A 1-D state fails here with torch's IndexError, as in ATen's check.
    if state.size(1) != hidden_size:
        raise RuntimeError(
            f"hidden{label} has inconsistent hidden_size: got {state.size(1)}, expected {hidden_size}"
        )
    if state.dim() != 2:
        raise RuntimeError(
            f"hidden{label} must be 2-D (batch, hidden_size) like the input, got {state.dim()}-D"
        )


def _run_cell(input, h, c, w_ih, w_hh, b_ih, b_hh, w_peep, cell):
    if w_hh.size(1) == 0:
        # hidden_size 0: nothing to compute, but the (B, 0) states stay in the autograd
        # graph of the input and weights, as torch's do.
        empty = input @ w_ih.t()
        return empty, None if c is None else empty.clone()
    cell_op = _op_entry(_recurrent.recurrent_cell, _recurrent.direct_recurrent_cell,
                       (input, h, c, w_ih, w_hh, b_ih, b_hh, w_peep))
    return cell_op(input, h, c, w_ih, w_hh, b_ih, b_hh, w_peep, cell)


def _check_cell_call(input, states, w_ih, w_hh, b_ih, b_hh):
    """What torch's ATen cells check, in their order: sizes first, then the matmul dtypes."""
    # A decoder calls a cell every step: the usual call passes with one shape comparison per
    # tensor (a third of the checks' time); anything else goes through every check.
    shape = input.shape
    if len(shape) == 2 and shape[1] == w_ih.shape[1] and input.dtype == w_ih.dtype == states[0].dtype == w_hh.dtype:
        expected = (shape[0], w_hh.shape[1])
        if states[0].shape == expected and (len(states) == 1 or states[1].shape == expected):
            return
    _check_cell_input(input, w_ih)
    for label, state in enumerate(states):
        _check_cell_hidden(input, state, w_hh.size(1), label)
    _check_matmul_dtypes(input, w_ih, b_ih is not None)
    _check_matmul_dtypes(states[0], w_hh, b_hh is not None)


def rnn_cell(input: Tensor, hx: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
             b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
             nonlinearity: str = "tanh") -> Tensor:
    """One Elman step: input (B, I), hx (B, H) or None -> h' (B, H)."""
    if nonlinearity not in ("tanh", "relu"):
        raise RuntimeError(f"Unknown nonlinearity: {nonlinearity}")
    if hx is None:
        hx = input.new_zeros((input.size(0), w_hh.size(1)))
    _check_cell_call(input, (hx,), w_ih, w_hh, b_ih, b_hh)
    return _run_cell(input, hx, None, w_ih, w_hh, b_ih, b_hh, None, "rnn_" + nonlinearity)[0]


def lstm_cell(input: Tensor, hx, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
              b_hh: Optional[Tensor] = None, *, w_peep: Optional[Tensor] = None,
              coupled_gates: bool = False):
    """One LSTM step: input (B, I), hx (h (B, H), c (B, H)) or None -> (h', c').

    ``w_peep`` turns on peephole connections ((3, H), or (2, H) with ``coupled_gates``)."""
    if hx is None:
        zeros = input.new_zeros((input.size(0), w_hh.size(1)))
        hx = (zeros, zeros)
    # What torch's argument parser takes for a list of tensors, and its messages.
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, not {python_type_name(hx)}")
    for index, state in enumerate(hx):
        if not isinstance(state, Tensor):
            raise TypeError(f"expected Tensor as element {index} in argument 1, but got {python_type_name(state)}")
    if len(hx) != 2:
        raise RuntimeError("lstm_cell expects two hidden states")
    h, c = hx
    _check_cell_call(input, (h, c), w_ih, w_hh, b_ih, b_hh)
    _check_cell_state_dtype(c, input)
    return _run_cell(input, h, c, w_ih, w_hh, b_ih, b_hh, w_peep, _lstm_cell_name(coupled_gates))


def gru_cell(input: Tensor, hx: Optional[Tensor], w_ih: Tensor, w_hh: Tensor,
             b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None, *,
             reset_after: bool = True) -> Tensor:
    """One GRU step: input (B, I), hx (B, H) or None -> h' (B, H)."""
    if hx is None:
        hx = input.new_zeros((input.size(0), w_hh.size(1)))
    _check_cell_call(input, (hx,), w_ih, w_hh, b_ih, b_hh)
    return _run_cell(input, hx, None, w_ih, w_hh, b_ih, b_hh, None, _gru_cell_name(reset_after))[0]


_POOL_DOC = """Max pooling over the trailing {dims} axes of (N, C, {axes}) or (C, {axes}) input.

Same arguments, results, layouts and errors as torch.nn.functional.max_pool{dims}d, plus
the seqkern extension (SPEC.md): ``padding`` may also be "same" (TensorFlow's rule),
"valid", or one (before, after) pair per spatial axis, and ``pad_value`` (default -inf)
is the value of padded positions; an output whose maximum is a padded position gets
index -1. Indices cost memory traffic, so they are made only as needed: none for inference,
int32 ones kept for backward when a gradient is tracked, int64 ones when returned.
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
