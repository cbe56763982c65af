"""NumPy reference (float64, no torch): the oracle every backend is checked against.

Recurrent layers and sequences (forward, BPTT) first, max pooling (forward, backward) at
the end.

Dimension legend (recurrent)
  T  time steps                 B  batch
  I  input features             H  hidden units
  P  LSTM projection size       Hout = P if a projection is given, else H
  G  gate blocks of the cell    W  workspace width per step
  L  layers                     D  directions (1, or 2 when bidirectional)

The math is ``shared/SPEC.md``; the argument lists and the workspace layout are the
contract in ``seqkern/ops/recurrent.py``. The code is laid out the way the C++ and Triton
kernels are: one input-projection GEMM over all steps, then per step one hidden GEMM and
one fused pointwise cell; backward walks the steps in reverse with one pointwise backward
per step and leaves every weight gradient to GEMMs over all steps after the loop.
"""
import itertools

import numpy as np

# Gate blocks per cell, in torch's row order. seqkern.ops imports these (this module must
# not import torch, so they live here).
CELL_GATES = {
    "rnn_tanh": 1,
    "rnn_relu": 1,
    "lstm": 4,
    "lstm_coupled": 3,
    "gru": 3,
    "gru_reset_before": 3,
}
LSTM_CELLS = ("lstm", "lstm_coupled")
# Which gate block each peephole row feeds, per LSTM cell.
_PEEPHOLE_GATES = {"lstm": (0, 1, 3), "lstm_coupled": (0, 2)}


def _sigmoid(x):
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _float_or_none(array):
    return None if array is None else np.asarray(array, dtype=np.float64)


def _check_cell(cell):
    if cell not in CELL_GATES:
        raise ValueError(f"seqkern reference: unknown cell {cell!r}; expected one of {', '.join(CELL_GATES)}")


def _active_steps(lengths, steps, batch):
    """(T, B) bool: whether sequence b takes step t."""
    if lengths is None:
        return np.ones((steps, batch), dtype=bool)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (batch,) or (lengths < 0).any() or (lengths > steps).any():
        raise ValueError(
            f"seqkern reference: lengths must have shape ({batch},) with values in [0, {steps}], "
            f"got {lengths.tolist()}"
        )
    return np.arange(steps)[:, None] < lengths[None, :]


def _step_order(steps, reverse):
    return range(steps - 1, -1, -1) if reverse else range(steps)


def workspace_width(cell, hidden):
    """Columns per step of the workspace (the layout is in seqkern/ops/recurrent.py)."""
    if cell in LSTM_CELLS:
        return (CELL_GATES[cell] + 1) * hidden
    if cell.startswith("gru"):
        return 4 * hidden
    return hidden


def _previous_states(states, initial, active, reverse):
    """State each step started from, (T, B, S), given the state after each step (zero
    where not reached): the step before in processing order if that step was taken by the
    sequence, otherwise the initial state (first step of a sequence, or a reverse
    direction starting at its own end)."""
    boundary_state = initial[None]
    boundary_active = np.zeros((1,) + active.shape[1:], dtype=bool)
    if reverse:
        shifted = np.concatenate([states[1:], boundary_state])
        shifted_active = np.concatenate([active[1:], boundary_active])
    else:
        shifted = np.concatenate([boundary_state, states[:-1]])
        shifted_active = np.concatenate([boundary_active, active[:-1]])
    return np.where(shifted_active[..., None], shifted, boundary_state)


# ---------------------------------------------------------------------------------------
# Fused pointwise cells, forward. Inputs: x_gates (B, G*H) = x W_ihᵀ + b_ih, h_gates
# (B, G*H) = h W_hhᵀ + b_hh (reset-before GRU: only its r, z blocks), the state.
# Each returns (h_new (B, H) before any projection, c_new or None, workspace row (B, W)).
# ---------------------------------------------------------------------------------------

def _rnn_forward(x_gates, h_gates, relu):
    pre = x_gates + h_gates
    h_new = np.maximum(pre, 0.0) if relu else np.tanh(pre)
    return h_new, None, h_new


def _lstm_forward(x_gates, h_gates, c, w_peep, coupled):
    hidden = c.shape[1]
    blocks = np.split(x_gates + h_gates, x_gates.shape[1] // hidden, axis=1)
    if coupled:
        f_pre, g_pre, o_pre = blocks
    else:
        i_pre, f_pre, g_pre, o_pre = blocks
    if w_peep is not None:
        if coupled:
            w_f, w_o = w_peep
        else:
            w_i, w_f, w_o = w_peep
            i_pre = i_pre + w_i * c
        f_pre = f_pre + w_f * c
    f = _sigmoid(f_pre)
    g = np.tanh(g_pre)
    i = 1.0 - f if coupled else _sigmoid(i_pre)
    c_new = f * c + i * g
    if w_peep is not None:
        # The output gate peeks at the new cell state, so it comes after c_new.
        o_pre = o_pre + w_o * c_new
    o = _sigmoid(o_pre)
    h_new = o * np.tanh(c_new)
    activated = (f, g, o) if coupled else (i, f, g, o)
    return h_new, c_new, np.concatenate(activated + (c_new,), axis=1)


def _gru_forward(x_gates, h_gates, h):
    x_r, x_z, x_n = np.split(x_gates, 3, axis=1)
    h_r, h_z, h_n = np.split(h_gates, 3, axis=1)
    r = _sigmoid(x_r + h_r)
    z = _sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    h_new = (1.0 - z) * n + z * h
    return h_new, None, np.concatenate([r, z, n, h_n], axis=1)


def _gru_reset_before_forward(x_gates, h_gates_rz, h, w_hn, b_hn):
    # r must be known before the n block's matmul, so this cell runs a second, smaller
    # GEMM ((r ⊙ h) W_hnᵀ) between two pointwise parts.
    x_r, x_z, x_n = np.split(x_gates, 3, axis=1)
    h_r, h_z = np.split(h_gates_rz, 2, axis=1)
    r = _sigmoid(x_r + h_r)
    z = _sigmoid(x_z + h_z)
    reset_h = r * h
    n = np.tanh(x_n + reset_h @ w_hn.T + b_hn)
    h_new = (1.0 - z) * n + z * h
    return h_new, None, np.concatenate([r, z, n, reset_h], axis=1)


# ---------------------------------------------------------------------------------------
# Fused pointwise cells, backward. Inputs: grad_h (B, H) of the cell's unprojected h_new,
# grad_c (B, H) of c_new (LSTM), the step's workspace row and the states it started from.
# Each returns (grad of x_gates, grad of h_gates, grad of h reaching it directly (not
# through W_hh), grad of c or None). For LSTM and GRU cells the pre-activation gradients
# are the same for x and h gates except GRU's n block, which h only reaches through r.
# ---------------------------------------------------------------------------------------

def _rnn_backward(grad_h, workspace_row, relu):
    h_new = workspace_row
    pre_grad = grad_h * (h_new > 0.0) if relu else grad_h * (1.0 - h_new * h_new)
    return pre_grad, pre_grad, 0.0, None


def _lstm_backward(grad_h, grad_c, workspace_row, c_prev, w_peep, coupled):
    hidden = c_prev.shape[1]
    blocks = np.split(workspace_row, workspace_row.shape[1] // hidden, axis=1)
    if coupled:
        f, g, o, c_new = blocks
        i = 1.0 - f
    else:
        i, f, g, o, c_new = blocks
    tanh_c = np.tanh(c_new)
    o_pre_grad = grad_h * tanh_c * o * (1.0 - o)
    c_grad = grad_c + grad_h * o * (1.0 - tanh_c * tanh_c)
    if w_peep is not None:
        c_grad = c_grad + o_pre_grad * w_peep[-1]
    g_pre_grad = c_grad * i * (1.0 - g * g)
    if coupled:
        f_pre_grad = c_grad * (c_prev - g) * f * (1.0 - f)
        pre_grad = np.concatenate([f_pre_grad, g_pre_grad, o_pre_grad], axis=1)
    else:
        i_pre_grad = c_grad * g * i * (1.0 - i)
        f_pre_grad = c_grad * c_prev * f * (1.0 - f)
        pre_grad = np.concatenate([i_pre_grad, f_pre_grad, g_pre_grad, o_pre_grad], axis=1)
    c_prev_grad = c_grad * f
    if w_peep is not None:
        c_prev_grad = c_prev_grad + f_pre_grad * w_peep[-2]
        if not coupled:
            c_prev_grad = c_prev_grad + i_pre_grad * w_peep[0]
    return pre_grad, pre_grad, 0.0, c_prev_grad


def _gru_backward(grad_h, workspace_row, h_prev):
    r, z, n, h_n = np.split(workspace_row, 4, axis=1)
    n_pre_grad = grad_h * (1.0 - z) * (1.0 - n * n)
    z_pre_grad = grad_h * (h_prev - n) * z * (1.0 - z)
    r_pre_grad = n_pre_grad * h_n * r * (1.0 - r)
    x_gates_grad = np.concatenate([r_pre_grad, z_pre_grad, n_pre_grad], axis=1)
    h_gates_grad = np.concatenate([r_pre_grad, z_pre_grad, n_pre_grad * r], axis=1)
    return x_gates_grad, h_gates_grad, grad_h * z, None


def _gru_reset_before_backward(grad_h, workspace_row, h_prev, w_hh):
    # Mirror of the forward: pointwise (n, z), the n block's GEMM back to r ⊙ h, then
    # pointwise (r). Returns the full gradient of h_prev, its W_hh products included.
    hidden = h_prev.shape[1]
    r, z, n, _ = np.split(workspace_row, 4, axis=1)
    n_pre_grad = grad_h * (1.0 - z) * (1.0 - n * n)
    z_pre_grad = grad_h * (h_prev - n) * z * (1.0 - z)
    reset_h_grad = n_pre_grad @ w_hh[2 * hidden:]
    r_pre_grad = reset_h_grad * h_prev * r * (1.0 - r)
    rz_grad = np.concatenate([r_pre_grad, z_pre_grad], axis=1)
    h_prev_grad = grad_h * z + reset_h_grad * r + rz_grad @ w_hh[:2 * hidden]
    gates_grad = np.concatenate([r_pre_grad, z_pre_grad, n_pre_grad], axis=1)
    return gates_grad, gates_grad, h_prev_grad


# ---------------------------------------------------------------------------------------
# One layer, one direction.
# ---------------------------------------------------------------------------------------

def recurrent_layer_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse):
    """One layer in one direction over the whole sequence.

    input (T, B, I), h0 (B, Hout), c0 (B, H) for LSTM cells else None, w_ih (G*H, I),
    w_hh (G*H, Hout), b_ih / b_hh (G*H,) or None, w_hr (P, H) or None, w_peep (3 or 2, H)
    or None, lengths (B,) ints in [0, T] or None.
    Returns output (T, B, Hout), h_n (B, Hout), c_n (B, H) or None, workspace (T, B, W).
    """
    _check_cell(cell)
    x = np.asarray(input, dtype=np.float64)
    h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep = (
        _float_or_none(a) for a in (h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep))
    steps, batch, _ = x.shape
    gate_rows = w_ih.shape[0]
    hidden = gate_rows // CELL_GATES[cell]
    out_size = hidden if w_hr is None else w_hr.shape[0]
    b_ih = np.zeros(gate_rows) if b_ih is None else b_ih
    b_hh = np.zeros(gate_rows) if b_hh is None else b_hh
    active = _active_steps(lengths, steps, batch)
    is_lstm = cell in LSTM_CELLS

    # The input projection does not depend on the recurrence: one GEMM for all steps.
    x_gates = x @ w_ih.T + b_ih
    # The reset-before GRU's n block multiplies r ⊙ h, not h; it is done inside its cell.
    hidden_rows = 2 * hidden if cell == "gru_reset_before" else gate_rows
    output = np.zeros((steps, batch, out_size))
    workspace = np.zeros((steps, batch, workspace_width(cell, hidden)))
    h = h0.copy()
    c = c0.copy() if is_lstm else None
    for t in _step_order(steps, reverse):
        h_gates = h @ w_hh[:hidden_rows].T + b_hh[:hidden_rows]
        if cell in ("rnn_tanh", "rnn_relu"):
            h_new, c_new, row = _rnn_forward(x_gates[t], h_gates, cell == "rnn_relu")
        elif is_lstm:
            h_new, c_new, row = _lstm_forward(x_gates[t], h_gates, c, w_peep, cell == "lstm_coupled")
        elif cell == "gru":
            h_new, c_new, row = _gru_forward(x_gates[t], h_gates, h)
        else:
            h_new, c_new, row = _gru_reset_before_forward(
                x_gates[t], h_gates, h, w_hh[hidden_rows:], b_hh[hidden_rows:])
        if w_hr is not None:
            h_new = h_new @ w_hr.T
        # Sequences past their length keep their state and write zeros.
        taken = active[t][:, None]
        h = np.where(taken, h_new, h)
        if is_lstm:
            c = np.where(taken, c_new, c)
        output[t] = np.where(taken, h_new, 0.0)
        workspace[t] = np.where(taken, row, 0.0)
    return output, h, c, workspace


def recurrent_layer_backward(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                             w_hr, w_peep, lengths, output, workspace, cell, reverse,
                             need_input_grad, need_weight_grad):
    """BPTT through one layer in one direction, from what forward returned.

    grad_output (T, B, Hout), grad_h_n (B, Hout), grad_c_n (B, H) or None (LSTM only; None
    means zero), the other arguments as forward got and returned them.
    Returns (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh,
    grad_w_hr, grad_w_peep): None for an absent argument, for grad_input unless
    need_input_grad, and for every weight and bias unless need_weight_grad.
    """
    _check_cell(cell)
    x = np.asarray(input, dtype=np.float64)
    grad_output, grad_h_n, grad_c_n, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, output, workspace = (
        _float_or_none(a) for a in (grad_output, grad_h_n, grad_c_n, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                    w_hr, w_peep, output, workspace))
    steps, batch, _ = x.shape
    gate_rows = w_ih.shape[0]
    hidden = gate_rows // CELL_GATES[cell]
    active = _active_steps(lengths, steps, batch)
    is_lstm = cell in LSTM_CELLS

    h_prev_all = _previous_states(output, h0, active, reverse)
    if is_lstm:
        c_all = workspace[..., gate_rows:]
        c_prev_all = _previous_states(c_all, c0, active, reverse)

    x_gates_grad = np.zeros((steps, batch, gate_rows))
    h_gates_grad = np.zeros((steps, batch, gate_rows))
    if w_hr is not None:
        projected_grad = np.zeros((steps, batch, w_hr.shape[0]))
    grad_h = grad_h_n.copy()
    if is_lstm:
        grad_c = np.zeros((batch, hidden)) if grad_c_n is None or grad_c_n.size == 0 else grad_c_n.copy()
    for t in reversed(_step_order(steps, reverse)):
        taken = active[t][:, None]
        # A step's h feeds both its output and the next step; the gradient is their sum.
        step_grad = grad_h + grad_output[t]
        if w_hr is not None:
            projected_grad[t] = np.where(taken, step_grad, 0.0)
            cell_grad = step_grad @ w_hr
        else:
            cell_grad = step_grad
        c_prev_grad = None
        if cell == "gru_reset_before":
            x_grad, h_grad, h_prev_grad = _gru_reset_before_backward(
                cell_grad, workspace[t], h_prev_all[t], w_hh)
        else:
            if cell in ("rnn_tanh", "rnn_relu"):
                x_grad, h_grad, direct_grad, _ = _rnn_backward(cell_grad, workspace[t], cell == "rnn_relu")
            elif is_lstm:
                x_grad, h_grad, direct_grad, c_prev_grad = _lstm_backward(
                    cell_grad, grad_c, workspace[t], c_prev_all[t], w_peep, cell == "lstm_coupled")
            else:
                x_grad, h_grad, direct_grad, _ = _gru_backward(cell_grad, workspace[t], h_prev_all[t])
            h_prev_grad = direct_grad + h_grad @ w_hh
        # A frozen sequence passes its state's gradient through the step untouched.
        grad_h = np.where(taken, h_prev_grad, grad_h)
        if is_lstm:
            grad_c = np.where(taken, c_prev_grad, grad_c)
        x_gates_grad[t] = np.where(taken, x_grad, 0.0)
        h_gates_grad[t] = np.where(taken, h_grad, 0.0)

    # Nothing below feeds back into the recurrence, so it runs once over all steps as GEMMs
    # (weights are shared by every step: their gradient is the sum of the per-step ones).
    grad_input = x_gates_grad @ w_ih if need_input_grad else None
    grad_c0 = grad_c if is_lstm else None
    if not need_weight_grad:
        return grad_input, grad_h, grad_c0, None, None, None, None, None, None
    grad_w_ih = np.einsum("tbg,tbi->gi", x_gates_grad, x)
    grad_w_hh = np.einsum("tbg,tbh->gh", h_gates_grad, h_prev_all)
    if cell == "gru_reset_before":
        reset_h = workspace[..., 3 * hidden:]
        grad_w_hh[2 * hidden:] = np.einsum("tbg,tbh->gh", h_gates_grad[..., 2 * hidden:], reset_h)
    grad_b_ih = x_gates_grad.sum(axis=(0, 1)) if b_ih is not None else None
    grad_b_hh = h_gates_grad.sum(axis=(0, 1)) if b_hh is not None else None
    grad_w_hr = None
    if w_hr is not None:
        # The unprojected h = o ⊙ tanh(c) is cheap to rebuild from the workspace.
        o = workspace[..., gate_rows - hidden:gate_rows]
        unprojected = o * np.tanh(c_all)
        grad_w_hr = np.einsum("tbp,tbh->ph", projected_grad, unprojected)
    grad_w_peep = None
    if w_peep is not None:
        gates = _PEEPHOLE_GATES[cell]
        # Input and forget gates peek at the previous cell state, the output gate at the new one.
        peeked = [c_prev_all] * (len(gates) - 1) + [c_all]
        grad_w_peep = np.stack([
            (x_gates_grad[..., g * hidden:(g + 1) * hidden] * state).sum(axis=(0, 1))
            for g, state in zip(gates, peeked)
        ])
    return grad_input, grad_h, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr, grad_w_peep


# ---------------------------------------------------------------------------------------
# Whole sequences: layers and directions.
# ---------------------------------------------------------------------------------------

_WEIGHT_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peep")


def recurrent_sequence_forward(input, hx, weights, cell, num_layers, bidirectional, lengths=None):
    """Stacked, optionally bidirectional recurrent network (no dropout).

    input (T, B, I); hx = (h0 (L*D, B, Hout), c0 (L*D, B, H) or None), or None for zeros;
    weights: L*D dicts with keys w_ih, w_hh, b_ih, b_hh, w_hr, w_peep (values may be None),
    layer-major, forward direction first; lengths (B,) or None.
    Returns output (T, B, D*Hout), h_n (L*D, B, Hout), c_n (L*D, B, H) or None, and the
    cache that recurrent_sequence_backward needs.
    """
    _check_cell(cell)
    directions = 2 if bidirectional else 1
    if len(weights) != num_layers * directions:
        raise ValueError(
            f"seqkern reference: expected {num_layers * directions} weight sets, got {len(weights)}")
    is_lstm = cell in LSTM_CELLS
    x = np.asarray(input, dtype=np.float64)
    batch = x.shape[1]
    h0, c0 = (None, None) if hx is None else hx
    if h0 is None:
        out_size = np.shape(weights[0]["w_hh"])[1]
        h0 = np.zeros((num_layers * directions, batch, out_size))
    if is_lstm and c0 is None:
        hidden = np.shape(weights[0]["w_hh"])[0] // CELL_GATES[cell]
        c0 = np.zeros((num_layers * directions, batch, hidden))
    h0 = np.asarray(h0, dtype=np.float64)
    c0 = np.asarray(c0, dtype=np.float64) if is_lstm else None

    layer_input = x
    layer_inputs, runs, h_n, c_n = [], [], [], []
    for layer in range(num_layers):
        layer_inputs.append(layer_input)
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            w = weights[k]
            output, h_last, c_last, workspace = recurrent_layer_forward(
                layer_input, h0[k], c0[k] if is_lstm else None, *(w.get(n) for n in _WEIGHT_NAMES),
                lengths, cell, direction == 1)
            runs.append((output, workspace))
            outputs.append(output)
            h_n.append(h_last)
            c_n.append(c_last)
        layer_input = np.concatenate(outputs, axis=-1)
    cache = dict(cell=cell, num_layers=num_layers, directions=directions, lengths=lengths,
                 h0=h0, c0=c0, weights=weights, layer_inputs=layer_inputs, runs=runs)
    return layer_input, np.stack(h_n), np.stack(c_n) if is_lstm else None, cache


def recurrent_sequence_backward(grad_output, grad_h_n, grad_c_n, cache):
    """BPTT through the whole network. grad_h_n / grad_c_n may be None (zero).

    Returns grad_input (T, B, I), grad_h0 (L*D, B, Hout), grad_c0 (L*D, B, H) or None, and a
    list of L*D dicts with the gradients of w_ih, w_hh, b_ih, b_hh, w_hr, w_peep (None where
    the weight is absent).
    """
    cell, directions, weights = cache["cell"], cache["directions"], cache["weights"]
    is_lstm = cell in LSTM_CELLS
    h0, c0 = cache["h0"], cache["c0"]
    grad_h_n = np.zeros_like(h0) if grad_h_n is None else np.asarray(grad_h_n, dtype=np.float64)
    if is_lstm:
        grad_c_n = np.zeros_like(c0) if grad_c_n is None else np.asarray(grad_c_n, dtype=np.float64)
    grad_h0 = np.zeros_like(h0)
    grad_c0 = np.zeros_like(c0) if is_lstm else None
    weight_grads = [None] * len(weights)
    layer_output_grad = np.asarray(grad_output, dtype=np.float64)
    for layer in reversed(range(cache["num_layers"])):
        layer_input = cache["layer_inputs"][layer]
        layer_input_grad = np.zeros_like(layer_input)
        for direction in range(directions):
            k = layer * directions + direction
            output, workspace = cache["runs"][k]
            out_size = output.shape[-1]
            w = weights[k]
            grads = recurrent_layer_backward(
                layer_output_grad[..., direction * out_size:(direction + 1) * out_size],
                grad_h_n[k], grad_c_n[k] if is_lstm else None, layer_input, h0[k],
                c0[k] if is_lstm else None, *(w.get(n) for n in _WEIGHT_NAMES), cache["lengths"],
                output, workspace, cell, direction == 1, True, True)
            layer_input_grad += grads[0]
            grad_h0[k] = grads[1]
            if is_lstm:
                grad_c0[k] = grads[2]
            weight_grads[k] = dict(zip(_WEIGHT_NAMES, grads[3:]))
        # Both directions read the same layer input, so their gradients add.
        layer_output_grad = layer_input_grad
    return layer_output_grad, grad_h0, grad_c0, weight_grads


# ---------------------------------------------------------------------------------------
# Max pooling, 1d / 2d / 3d. Shapes: x (N, C, *S) with S the 1, 2 or 3 spatial axes,
# output and indices (N, C, *S_out). Per-axis arguments are tuples with one entry per
# spatial axis; padding is a tuple of (before, after) per axis.
# ---------------------------------------------------------------------------------------

def max_pool_output_size(length, kernel, stride, dilation, pad_before, pad_after, ceil_mode):
    """Output length along one axis, torch's rule extended to unequal padding sides."""
    span = dilation * (kernel - 1) + 1
    numerator = length + pad_before + pad_after - span + (stride - 1 if ceil_mode else 0)
    size = numerator // stride + 1
    # ceil_mode may not start a window in the trailing padding only.
    if ceil_mode and (size - 1) * stride >= length + pad_before:
        size -= 1
    return size


def same_padding(length, kernel, stride, dilation):
    """TensorFlow's "same" padding along one axis: (before, after), the smaller half before."""
    size = -(-length // stride)
    total = max((size - 1) * stride + (kernel - 1) * dilation + 1 - length, 0)
    return total // 2, total - total // 2


def _check_pool_arguments(x, kernel_size, stride, dilation, padding):
    dims = x.ndim - 2
    if dims not in (1, 2, 3):
        raise ValueError(f"seqkern reference max pool: x must be (N, C, *S) with 1 to 3 spatial axes, "
                         f"got shape {x.shape}")
    for name, values in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation),
                         ("padding", padding)):
        if len(values) != dims:
            raise ValueError(f"seqkern reference max pool: {name} needs {dims} entries, got {values}")
    for name, values in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
        if any(v < 1 for v in values):
            raise ValueError(f"seqkern reference max pool: {name} must be positive, got {values}")
    if any(len(sides) != 2 or min(sides) < 0 for sides in padding):
        raise ValueError(f"seqkern reference max pool: padding must be non-negative (before, after) pairs, "
                         f"got {padding}")


def max_pool_forward(x, kernel_size, stride, dilation, padding, ceil_mode, pad_value):
    """Max pooling with argmax indices.

    indices: int64 flat offsets within each (n, c) plane of the unpadded input.
    The window of output o along an axis is {o*s - before + j*d : j < k}; positions in
    [-before, L + after) but outside [0, L) are padded; positions past L + after (only
    reachable with ceil_mode) are not part of the window. Positions are visited in
    row-major kernel order; a value replaces the running maximum when it is strictly
    greater or NaN (torch's rule: ties keep the first, the last NaN gives the index).
    pad_value = -inf skips padded positions (torch: an all -inf window gives -inf and its
    first in-bounds position). A finite pad_value lets padded positions compete; an output
    whose maximum is a padded position, or whose window has no in-bounds position, gets
    index -1.
    """
    x = np.asarray(x, dtype=np.float64)
    _check_pool_arguments(x, kernel_size, stride, dilation, padding)
    planes = x.shape[:2]
    spatial = x.shape[2:]
    out_shape = tuple(
        max_pool_output_size(length, k, s, d, before, after, ceil_mode)
        for length, k, s, d, (before, after) in zip(spatial, kernel_size, stride, dilation, padding))
    if any(size < 1 for size in out_shape):
        raise ValueError(f"seqkern reference max pool: input of spatial size {spatial} gives output size "
                         f"{out_shape}, which is too small")
    skip_padding = pad_value == -np.inf
    flat = x.reshape(planes + (int(np.prod(spatial)),))
    strides_in_plane = [int(np.prod(spatial[a + 1:])) for a in range(len(spatial))]
    output = np.empty(planes + out_shape)
    indices = np.empty(planes + out_shape, dtype=np.int64)
    for position in np.ndindex(*out_shape):
        # Per axis: the window's positions, and whether each is inside the unpadded input.
        axis_positions = []
        for o, length, k, s, d, (before, after) in zip(position, spatial, kernel_size, stride, dilation, padding):
            window = [o * s - before + j * d for j in range(k)]
            window = [p for p in window if -before <= p < length + after]
            if skip_padding:
                window = [p for p in window if 0 <= p < length]
            axis_positions.append(window)
        best = None
        best_index = None
        for point in itertools.product(*axis_positions):
            inside = all(0 <= p < length for p, length in zip(point, spatial))
            if inside:
                offset = sum(p * st for p, st in zip(point, strides_in_plane))
                value = flat[..., offset]
                index = np.full(planes, offset, dtype=np.int64)
            else:
                value = np.full(planes, float(pad_value))
                index = np.full(planes, -1, dtype=np.int64)
            if best is None:
                best, best_index = value.copy(), index
                continue
            replace = (value > best) | np.isnan(value)
            best = np.where(replace, value, best)
            best_index = np.where(replace, index, best_index)
        if best is None:
            best = np.full(planes, float(pad_value))
            best_index = np.full(planes, -1, dtype=np.int64)
        output[(...,) + position] = best
        indices[(...,) + position] = best_index
    return output, indices


def max_pool_backward(grad_output, indices, input_shape):
    """Scatter-add each output gradient into its argmax; index -1 contributes nothing."""
    grad_output = np.asarray(grad_output, dtype=np.float64)
    indices = np.asarray(indices, dtype=np.int64)
    planes = tuple(input_shape[:2])
    plane_size = int(np.prod(input_shape[2:]))
    grad_input = np.zeros(planes + (plane_size,))
    grad_flat = grad_output.reshape(planes + (int(np.prod(indices.shape[2:])),))
    index_flat = indices.reshape(grad_flat.shape)
    for n, c in np.ndindex(*planes):
        kept = index_flat[n, c] >= 0
        # add.at, not fancy assignment: overlapping windows share an argmax.
        np.add.at(grad_input[n, c], index_flat[n, c][kept], grad_flat[n, c][kept])
    return grad_input.reshape(tuple(input_shape))
