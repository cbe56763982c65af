"""NumPy reference (float64, no torch): the oracle every backend is checked against.

Dimension legend
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
import numpy as np

# Gate blocks per cell, in torch's row order. Kept here rather than imported from
# seqkern.ops because this module must not import torch.
_GATES = {
    "rnn_tanh": 1,
    "rnn_relu": 1,
    "lstm": 4,
    "lstm_coupled": 3,
    "gru": 3,
    "gru_reset_before": 3,
}
_LSTM_CELLS = ("lstm", "lstm_coupled")
# Which gate block each peephole row feeds, per LSTM cell.
_PEEPHOLE_GATES = {"lstm": (0, 1, 3), "lstm_coupled": (0, 2)}


def _sigmoid(x):
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _float_or_none(array):
    return None if array is None else np.asarray(array, dtype=np.float64)


def _check_cell(cell):
    if cell not in _GATES:
        raise ValueError(f"seqkern reference: unknown cell {cell!r}; expected one of {', '.join(_GATES)}")


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
    hidden = gate_rows // _GATES[cell]
    out_size = hidden if w_hr is None else w_hr.shape[0]
    b_ih = np.zeros(gate_rows) if b_ih is None else b_ih
    b_hh = np.zeros(gate_rows) if b_hh is None else b_hh
    active = _active_steps(lengths, steps, batch)
    is_lstm = cell in _LSTM_CELLS

    # The input projection does not depend on the recurrence: one GEMM for all steps.
    x_gates = x @ w_ih.T + b_ih
    # The reset-before GRU's n block multiplies r ⊙ h, not h; it is done inside its cell.
    hidden_rows = 2 * hidden if cell == "gru_reset_before" else gate_rows
    output = np.zeros((steps, batch, out_size))
    workspace = np.zeros((steps, batch, _workspace_width(cell, hidden)))
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


def _workspace_width(cell, hidden):
    if cell in _LSTM_CELLS:
        return (_GATES[cell] + 1) * hidden
    if cell.startswith("gru"):
        return 4 * hidden
    return hidden


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
    hidden = gate_rows // _GATES[cell]
    active = _active_steps(lengths, steps, batch)
    is_lstm = cell in _LSTM_CELLS

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
    is_lstm = cell in _LSTM_CELLS
    x = np.asarray(input, dtype=np.float64)
    batch = x.shape[1]
    h0, c0 = (None, None) if hx is None else hx
    if h0 is None:
        out_size = np.shape(weights[0]["w_hh"])[1]
        h0 = np.zeros((num_layers * directions, batch, out_size))
    if is_lstm and c0 is None:
        hidden = np.shape(weights[0]["w_hh"])[0] // _GATES[cell]
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
    is_lstm = cell in _LSTM_CELLS
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
