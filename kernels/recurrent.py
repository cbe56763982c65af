"""Triton recurrent kernels (LSTM / GRU / RNN, forward and BPTT) and their launchers.

Dimension legend
  T  time steps                 B  batch
  I  input features             H  hidden units
  P  LSTM projection size       K  width of the recurrent state h: P with a projection, else H
  G  gate blocks of the cell    W  workspace width per step (seqkern.ops.recurrent)
  GG width of the per-step gate gradients: 4H for ``gru`` ([r, z, n·r, n]: the hidden side
     of the n block differs from the input side), else G*H
  HS, KS  H and K rounded up to a multiple of 16: the row stride of every matmul operand
     (state buffers, W_hh as (G*HS, KS) with gate g at row g*HS, W_hr as (KS, HS)), zero
     padded, so that Triton knows each row is aligned and loads whole vectors
  BB batch rows per program (BLOCK_B)     BN output columns per program (BLOCK_N)
  BK reduction chunk of a tl.dot (BLOCK_K)

Three ways to run a layer, all built from the same per-phase device functions
(``_forward_phase`` / ``_backward_phase``), so they compute the same thing:
  persistent  ``_sequence_forward_kernel`` / ``_sequence_backward_kernel``: one program per
              batch tile owns all H units (walked in column tiles) and loops over all T
              steps inside the kernel; the phases of a step are separated by CTA barriers,
              never by other programs, so it also runs under the Triton interpreter. Chosen
              up to ``MAX_PERSISTENT_HIDDEN`` units.
  step        ``_step_forward_kernel`` / ``_step_backward_kernel``: one launch per phase of
              a step over a (batch tile, column tile) grid; the recurrent matmul is a tl.dot
              whose epilogue is the cell. Used above the persistent limit.
  cell        the same step kernels with HIDDEN_FROM_MEMORY: the recurrent matmul is a torch
              GEMM per step and the kernel is the fused pointwise cell (forward and backward).

A step has one or two phases: the cell (``FORWARD_CELL``); before it, the reset-before GRU
computes r and r ⊙ h (``FORWARD_RESET_GATE``) because the n block's matmul needs them; after
it, an LSTM projection multiplies by W_hr (``FORWARD_PROJECT``). Backward mirrors this.

The recurrent state lives in float32 buffers (h ping-pong (2, B, KS), c (B, H)) so the
state of a finished sequence stays frozen exactly, whatever the dtype; the matmuls read it
cast to the weights' dtype and accumulate in float32. The input projection for all steps
and every weight gradient are torch GEMMs outside the time loop; inside it nothing reads a
tensor value on the host. Offsets into (T, B, .) tensors are 64-bit.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from seqkern.ops.recurrent import CELL_GATES, LSTM_CELLS, workspace_width

# Cell codes, the kernels' CELL constexpr.
RNN_TANH = tl.constexpr(0)
RNN_RELU = tl.constexpr(1)
LSTM = tl.constexpr(2)
LSTM_COUPLED = tl.constexpr(3)
GRU = tl.constexpr(4)
GRU_RESET_BEFORE = tl.constexpr(5)
CELL_CODES = {
    "rnn_tanh": 0, "rnn_relu": 1, "lstm": 2, "lstm_coupled": 3, "gru": 4, "gru_reset_before": 5,
}


# Per cell code, in CELL_CODES order. Literal tables: Triton tracks what kernels reference
# and refuses plain Python functions (tests check these against CELL_GATES / workspace_width).
@triton.constexpr_function
def _gate_blocks(cell):
    """G of a cell code."""
    return (1, 1, 4, 3, 3, 3)[cell]


@triton.constexpr_function
def _workspace_blocks(cell):
    """W / H of a cell code."""
    return (1, 1, 5, 4, 4, 4)[cell]


@triton.constexpr_function
def _gate_gradient_blocks(cell):
    """GG / H of a cell code."""
    return (1, 1, 4, 3, 4, 3)[cell]


# Phases of one step (the kernels' PHASE constexpr).
FORWARD_RESET_GATE = tl.constexpr(0)   # reset-before GRU: r, z and r ⊙ h
FORWARD_CELL = tl.constexpr(1)         # gate matmul + cell
FORWARD_PROJECT = tl.constexpr(2)      # LSTM projection h = m W_hrᵀ
BACKWARD_PROJECT = tl.constexpr(3)     # gradient of the projected h (into grad_h_out)
BACKWARD_CELL = tl.constexpr(4)        # gradient of the state + cell backward
BACKWARD_RESET_GATE = tl.constexpr(5)  # reset-before GRU: (r ⊙ h) gradient -> r gradient

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _upcast_dot_operands(dtype: torch.dtype) -> bool:
    """The interpreter multiplies bfloat16 tl.dot operands as raw bits (triton#11584), so
    there the operands are widened to float32 first: bf16 values are exact in fp32, so the
    products are the same and only the summation order may differ. Off on GPUs."""
    return _interpreting() and dtype == torch.bfloat16


def _dot_precision(dtype: torch.dtype) -> str:
    """An fp32 tl.dot is TF32 on a GPU unless told otherwise; follow torch's own switch so
    a layer gives what torch's fp32 matmuls give. Only fp32 operands read it."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


# ---------------------------------------------------------------------------------------
# Device functions
# ---------------------------------------------------------------------------------------

@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    if UPCAST_DOT:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _tanh(x):
    # No tanh in tl and libdevice is not interpreted; exp(-2|x|) never overflows.
    e = tl.exp(-2.0 * tl.abs(x))
    magnitude = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0.0, -magnitude, magnitude)


@triton.jit
def _load_block(ptr, offsets, mask):
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _gate_products(a_ptr, a_rows, row_ok, k_size, w_ptr, w_cols, w_gate_step, w_col_ok, w_stride_k,
                   result_ptr, result_rows, result_cols, result_gate_step, col_ok,
                   GATES: tl.constexpr, HIDDEN_FROM_MEMORY: tl.constexpr, BLOCK_B: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   UPCAST_DOT: tl.constexpr):
    """Blocks of up to four gates of a recurrent matmul, A[rows, :k_size] @ Wmat[:k_size,
    cols + gate * w_gate_step], in one pass over k so each chunk of A is loaded once.
    Unused gates come back as zeros. With HIDDEN_FROM_MEMORY (cell path) the blocks are
    read from the product torch computed: result_rows[:, None] + result_cols + gate *
    result_gate_step, where col_ok.

    k_size and the extent in w_col_ok are the padded sizes (multiples of 16; the padding
    holds zeros): masks that are constant over 16 elements let the loads be vectorized."""
    acc0 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    if HIDDEN_FROM_MEMORY:
        at = result_rows[:, None] + result_cols[None, :]
        tile_ok = row_ok[:, None] & col_ok[None, :]
        acc0 = _load_block(result_ptr, at, tile_ok)
        if GATES > 1:
            acc1 = _load_block(result_ptr, at + result_gate_step, tile_ok)
        if GATES > 2:
            acc2 = _load_block(result_ptr, at + 2 * result_gate_step, tile_ok)
        if GATES > 3:
            acc3 = _load_block(result_ptr, at + 3 * result_gate_step, tile_ok)
    else:
        for k_start in range(0, k_size, BLOCK_K):
            k = k_start + tl.arange(0, BLOCK_K)
            k_ok = k < k_size
            a = tl.load(a_ptr + a_rows[:, None] + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            a = a.to(w_ptr.dtype.element_ty)
            w_at = w_cols[None, :] + k.to(tl.int64)[:, None] * w_stride_k
            w_ok = k_ok[:, None] & w_col_ok[None, :]
            acc0 = _dot(a, tl.load(w_ptr + w_at, mask=w_ok, other=0.0), acc0, DOT_PRECISION, UPCAST_DOT)
            if GATES > 1:
                acc1 = _dot(a, tl.load(w_ptr + w_gate_step + w_at, mask=w_ok, other=0.0), acc1,
                            DOT_PRECISION, UPCAST_DOT)
            if GATES > 2:
                acc2 = _dot(a, tl.load(w_ptr + 2 * w_gate_step + w_at, mask=w_ok, other=0.0), acc2,
                            DOT_PRECISION, UPCAST_DOT)
            if GATES > 3:
                acc3 = _dot(a, tl.load(w_ptr + 3 * w_gate_step + w_at, mask=w_ok, other=0.0), acc3,
                            DOT_PRECISION, UPCAST_DOT)
    return acc0, acc1, acc2, acc3


@triton.jit
def _product(a_ptr, a_rows, row_ok, k_size, w_ptr, w_cols, w_col_ok, w_stride_k,
             result_ptr, result_rows, result_cols, col_ok,
             HIDDEN_FROM_MEMORY: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """One block of a recurrent matmul (``_gate_products`` of one gate)."""
    product, _, _, _ = _gate_products(a_ptr, a_rows, row_ok, k_size, w_ptr, w_cols, 0, w_col_ok, w_stride_k,
                                      result_ptr, result_rows, result_cols, 0, col_ok, 1, HIDDEN_FROM_MEMORY,
                                      BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
    return product


@triton.jit
def _rows_and_times(s, pid_b, lengths, T, B,
                    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, BLOCK_B: tl.constexpr):
    """Rows of this program at processing step s: their index, whether they exist, take
    the step, and took a step before it, and the time index of the step for each row (a
    reversed sequence starts at its own last step) and of the step before it."""
    rows = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    if HAS_LENGTHS:
        # Clamped so that a bad length can never address memory outside the tensors.
        length = tl.minimum(tl.maximum(tl.load(lengths + rows, mask=row_ok, other=0), 0), T).to(tl.int32)
    else:
        length = tl.full((BLOCK_B,), T, dtype=tl.int32)
    step = tl.zeros((BLOCK_B,), dtype=tl.int32) + s
    active = row_ok & (step < length)
    if REVERSE:
        t = length - 1 - s
        t_before = t + 1
    else:
        t = step
        t_before = t - 1
    return rows.to(tl.int64), row_ok, active, step > 0, t.to(tl.int64), t_before.to(tl.int64)


@triton.jit
def _forward_phase(
    s, pid_b, pid_n,
    gates_x,       # (T, B, G*H) x W_ihᵀ + b_ih, input dtype
    hidden_gates,  # cell path: (B, N) torch's product for this phase, else unused
    w_hh,          # (G*HS, KS) W_hh operand
    b_hh,          # (G*H,)
    w_hr,          # (KS, HS) W_hr operand
    w_peep,        # (3 or 2, H)
    lengths,       # (B,) int64
    h_src,         # (B, KS) fp32 state before the step
    h_dst,         # (B, KS) fp32 state after the step
    c_state,       # (B, H) fp32, updated in place
    m_buf,         # (B, HS) fp32: unprojected h (projection) or r ⊙ h (reset-before GRU)
    output,        # (T, B, K)
    workspace,     # (T, B, W)
    T, B, H, K,
    HS, KS,        # row strides of the matmul operands: H, K rounded up to a multiple of 16
    PHASE: tl.constexpr, CELL: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_B_HH: tl.constexpr, HAS_PEEP: tl.constexpr, HAS_PROJ: tl.constexpr,
    HIDDEN_FROM_MEMORY: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    G: tl.constexpr = _gate_blocks(CELL)
    W: tl.constexpr = _workspace_blocks(CELL)
    rows, row_ok, active, _, t, _ = _rows_and_times(s, pid_b, lengths, T, B, REVERSE, HAS_LENGTHS, BLOCK_B)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols64 = cols.to(tl.int64)
    step_rows = t * B + rows             # row of (T, B, .) tensors; meaningful where active
    if PHASE == FORWARD_PROJECT:
        col_ok = cols < K
        tile_ok = row_ok[:, None] & col_ok[None, :]
        h = _product(m_buf, rows * HS, row_ok, HS, w_hr, cols64 * HS, col_ok, 1,
                     hidden_gates, rows * K, cols64, col_ok,
                     HIDDEN_FROM_MEMORY, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        write = active[:, None] & col_ok[None, :]
        tl.store(output + step_rows[:, None] * K + cols64[None, :], h.to(output.dtype.element_ty), mask=write)
        h_at = rows[:, None] * KS + cols64[None, :]
        h_before = tl.load(h_src + h_at, mask=tile_ok, other=0.0)
        tl.store(h_dst + h_at, tl.where(write, h, h_before), mask=tile_ok)
    else:
        col_ok = cols < H
        tile_ok = row_ok[:, None] & col_ok[None, :]
        write = active[:, None] & col_ok[None, :]
        x_at = step_rows[:, None] * (G * H) + cols64[None, :]
        ws_at = step_rows[:, None] * (W * H) + cols64[None, :]
        h_at = rows[:, None] * KS + cols64[None, :]
        c_at = rows[:, None] * H + cols64[None, :]
        m_at = rows[:, None] * HS + cols64[None, :]
        # Hidden-gate block g: rows g*HS + cols of the W_hh operand, or on the cell path
        # columns g*H + cols of torch's product (for the reset-before n block, torch's
        # product in that phase is the n block alone).
        if CELL == GRU_RESET_BEFORE and PHASE == FORWARD_CELL:
            h_n = _product(m_buf, rows * HS, row_ok, HS, w_hh, (2 * HS + cols64) * KS, col_ok, 1,
                           hidden_gates, rows * H, cols64, col_ok,
                           HIDDEN_FROM_MEMORY, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
            if HAS_B_HH:
                h_n += _load_block(b_hh, 2 * H + cols64, col_ok)[None, :]
            r = _load_block(workspace, ws_at, write)
            z = _load_block(workspace, ws_at + H, write)
            n = _tanh(_load_block(gates_x, x_at + 2 * H, write) + h_n)
            h_before = tl.load(h_src + h_at, mask=tile_ok, other=0.0)
            h_new = (1.0 - z) * n + z * h_before
            tl.store(workspace + ws_at + 2 * H, n.to(workspace.dtype.element_ty), mask=write)
            tl.store(output + step_rows[:, None] * K + cols64[None, :], h_new.to(output.dtype.element_ty), mask=write)
            tl.store(h_dst + h_at, tl.where(write, h_new, h_before), mask=tile_ok)
        else:
            if CELL == GRU_RESET_BEFORE:
                hidden_width = 2 * H
                GATES: tl.constexpr = 2   # r and z: the n block needs r ⊙ h first
            else:
                hidden_width = G * H
                GATES: tl.constexpr = G
            pre0, pre1, pre2, pre3 = _gate_products(
                h_src, rows * KS, row_ok, KS, w_hh, cols64 * KS, HS * KS, col_ok, 1,
                hidden_gates, rows * hidden_width, cols64, H, col_ok,
                GATES, HIDDEN_FROM_MEMORY, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
            if HAS_B_HH:
                pre0 += _load_block(b_hh, cols64, col_ok)[None, :]
                if GATES > 1:
                    pre1 += _load_block(b_hh, H + cols64, col_ok)[None, :]
                if GATES > 2:
                    pre2 += _load_block(b_hh, 2 * H + cols64, col_ok)[None, :]
                if GATES > 3:
                    pre3 += _load_block(b_hh, 3 * H + cols64, col_ok)[None, :]
            pre0 += _load_block(gates_x, x_at, write)
            if GATES > 1:
                pre1 += _load_block(gates_x, x_at + H, write)
            if GATES > 2 and CELL != GRU:   # GRU's input n block joins after the reset
                pre2 += _load_block(gates_x, x_at + 2 * H, write)
            if GATES > 3:
                pre3 += _load_block(gates_x, x_at + 3 * H, write)
            if CELL == RNN_TANH or CELL == RNN_RELU:
                if CELL == RNN_TANH:
                    h_new = _tanh(pre0)
                else:
                    h_new = tl.maximum(pre0, 0.0)
                tl.store(workspace + ws_at, h_new.to(workspace.dtype.element_ty), mask=write)
                h_before = tl.load(h_src + h_at, mask=tile_ok, other=0.0)
                tl.store(output + step_rows[:, None] * K + cols64[None, :], h_new.to(output.dtype.element_ty), mask=write)
                tl.store(h_dst + h_at, tl.where(write, h_new, h_before), mask=tile_ok)
            elif CELL == GRU_RESET_BEFORE:
                r = tl.sigmoid(pre0)
                z = tl.sigmoid(pre1)
                h_before = tl.load(h_src + h_at, mask=tile_ok, other=0.0)
                reset_h = r * h_before
                tl.store(workspace + ws_at, r.to(workspace.dtype.element_ty), mask=write)
                tl.store(workspace + ws_at + H, z.to(workspace.dtype.element_ty), mask=write)
                tl.store(workspace + ws_at + 3 * H, reset_h.to(workspace.dtype.element_ty), mask=write)
                tl.store(m_buf + m_at, reset_h, mask=tile_ok)
            elif CELL == GRU:
                h_n = pre2
                r = tl.sigmoid(pre0)
                z = tl.sigmoid(pre1)
                n = _tanh(_load_block(gates_x, x_at + 2 * H, write) + r * h_n)
                h_before = tl.load(h_src + h_at, mask=tile_ok, other=0.0)
                h_new = (1.0 - z) * n + z * h_before
                tl.store(workspace + ws_at, r.to(workspace.dtype.element_ty), mask=write)
                tl.store(workspace + ws_at + H, z.to(workspace.dtype.element_ty), mask=write)
                tl.store(workspace + ws_at + 2 * H, n.to(workspace.dtype.element_ty), mask=write)
                tl.store(workspace + ws_at + 3 * H, h_n.to(workspace.dtype.element_ty), mask=write)
                tl.store(output + step_rows[:, None] * K + cols64[None, :], h_new.to(output.dtype.element_ty), mask=write)
                tl.store(h_dst + h_at, tl.where(write, h_new, h_before), mask=tile_ok)
            else:
                # LSTM: pre0..pre3 are (i, f, g, o), or (f, g, o) for the coupled cell.
                c_before = tl.load(c_state + c_at, mask=tile_ok, other=0.0)
                if CELL == LSTM:
                    i_pre = pre0
                    f_pre = pre1
                    g_pre = pre2
                    o_pre = pre3
                    if HAS_PEEP:
                        i_pre += _load_block(w_peep, cols64, col_ok)[None, :] * c_before
                        f_pre += _load_block(w_peep, H + cols64, col_ok)[None, :] * c_before
                    f = tl.sigmoid(f_pre)
                    i = tl.sigmoid(i_pre)
                else:
                    f_pre = pre0
                    g_pre = pre1
                    o_pre = pre2
                    if HAS_PEEP:
                        f_pre += _load_block(w_peep, cols64, col_ok)[None, :] * c_before
                    f = tl.sigmoid(f_pre)
                    i = 1.0 - f
                g = _tanh(g_pre)
                c_new = f * c_before + i * g
                if HAS_PEEP:
                    # The output gate peeks at the new cell state.
                    if CELL == LSTM:
                        peep_o = 2 * H
                    else:
                        peep_o = H
                    o_pre += _load_block(w_peep, peep_o + cols64, col_ok)[None, :] * c_new
                o = tl.sigmoid(o_pre)
                h_new = o * _tanh(c_new)
                ws_type = workspace.dtype.element_ty
                if CELL == LSTM:
                    tl.store(workspace + ws_at, i.to(ws_type), mask=write)
                    tl.store(workspace + ws_at + H, f.to(ws_type), mask=write)
                    tl.store(workspace + ws_at + 2 * H, g.to(ws_type), mask=write)
                    tl.store(workspace + ws_at + 3 * H, o.to(ws_type), mask=write)
                else:
                    tl.store(workspace + ws_at, f.to(ws_type), mask=write)
                    tl.store(workspace + ws_at + H, g.to(ws_type), mask=write)
                    tl.store(workspace + ws_at + 2 * H, o.to(ws_type), mask=write)
                tl.store(workspace + ws_at + G * H, c_new.to(ws_type), mask=write)
                tl.store(c_state + c_at, c_new, mask=write)
                if HAS_PROJ:
                    tl.store(m_buf + m_at, h_new, mask=tile_ok)
                else:
                    h_before = tl.load(h_src + h_at, mask=tile_ok, other=0.0)
                    tl.store(output + step_rows[:, None] * K + cols64[None, :], h_new.to(output.dtype.element_ty), mask=write)
                    tl.store(h_dst + h_at, tl.where(write, h_new, h_before), mask=tile_ok)


@triton.jit
def _backward_phase(
    s, pid_b, pid_n,
    grad_output,      # (T, B, K)
    output,           # (T, B, K) forward output: h_{t-1} of the GRU cells
    h0,               # (B, K)
    c0,               # (B, H)
    workspace,        # (T, B, W)
    w_hh,             # (G*HS, KS) W_hh operand
    w_hr,             # (KS, HS) W_hr operand
    w_peep,           # (3 or 2, H)
    lengths,          # (B,) int64
    grad_gates,       # (T, B, GG) pre-activation gradients by time, for the weight GEMMs
    grad_gates_src,   # (B, G*HS) hidden-side gate gradients of the step after (0 where not taken)
    grad_gates_dst,   # (B, G*HS) same for this step
    grad_h_out,       # (T, B, P) gradient of the projected h, by time (projection only)
    grad_h_out_step,  # (B, KS) same for this step, 0 where not taken
    grad_h_direct,    # (B, K) fp32, in place: gradient of h_{t-1} not passing through W_hh
    grad_c_state,     # (B, H) fp32, in place: gradient of c_{t-1}
    hidden_product,   # cell path: (B, N) torch's product for this phase
    T, B, H, K,
    HS, KS,           # row strides of the matmul operands: H, K rounded up to a multiple of 16
    PHASE: tl.constexpr, CELL: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_PEEP: tl.constexpr, HAS_PROJ: tl.constexpr, HIDDEN_FROM_MEMORY: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    G: tl.constexpr = _gate_blocks(CELL)
    W: tl.constexpr = _workspace_blocks(CELL)
    GG: tl.constexpr = _gate_gradient_blocks(CELL)
    rows, row_ok, active, has_before, t, t_before = _rows_and_times(s, pid_b, lengths, T, B, REVERSE, HAS_LENGTHS, BLOCK_B)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cols64 = cols.to(tl.int64)
    step_rows = t * B + rows
    before_rows = t_before * B + rows
    has_before = has_before[:, None]
    if PHASE == BACKWARD_PROJECT or (PHASE == BACKWARD_CELL and not HAS_PROJ):
        # Gradient reaching this step's h (K columns): from the output, from the step after
        # through W_hh, and directly (GRU's z ⊙ h, or all of it while a sequence is frozen).
        col_ok = cols < K
        tile_ok = row_ok[:, None] & col_ok[None, :]
        write = active[:, None] & col_ok[None, :]
        state_at = rows[:, None] * K + cols64[None, :]
        if CELL == GRU_RESET_BEFORE:
            recurrent_width = 2 * HS   # its n block reaches h through r ⊙ h, see BACKWARD_RESET_GATE
        else:
            recurrent_width = G * HS
        grad_h = _product(grad_gates_src, rows * (G * HS), row_ok, recurrent_width, w_hh, cols64, cols < KS, KS,
                          hidden_product, rows * K, cols64, col_ok,
                          HIDDEN_FROM_MEMORY, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        grad_h += tl.load(grad_h_direct + state_at, mask=tile_ok, other=0.0)
        grad_h += _load_block(grad_output, step_rows[:, None] * K + cols64[None, :], write)
        if PHASE == BACKWARD_PROJECT:
            tl.store(grad_h_out + step_rows[:, None] * K + cols64[None, :], grad_h.to(grad_h_out.dtype.element_ty), mask=write)
            tl.store(grad_h_out_step + rows[:, None] * KS + cols64[None, :], tl.where(write, grad_h, 0.0).to(grad_h_out_step.dtype.element_ty), mask=tile_ok)
            tl.store(grad_h_direct + state_at, tl.where(write, 0.0, grad_h), mask=tile_ok)
    if PHASE == BACKWARD_CELL:
        col_ok = cols < H
        tile_ok = row_ok[:, None] & col_ok[None, :]
        write = active[:, None] & col_ok[None, :]
        state_at = rows[:, None] * H + cols64[None, :]
        ws_at = step_rows[:, None] * (W * H) + cols64[None, :]
        gg_at = step_rows[:, None] * (GG * H) + cols64[None, :]
        dst_at = rows[:, None] * (G * HS) + cols64[None, :]
        gg_type = grad_gates.dtype.element_ty
        if HAS_PROJ:
            grad_h = _product(grad_h_out_step, rows * KS, row_ok, KS, w_hr, cols64, cols < HS, HS,
                              hidden_product, rows * H, cols64, col_ok,
                              HIDDEN_FROM_MEMORY, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        if CELL == RNN_TANH or CELL == RNN_RELU:
            h = _load_block(workspace, ws_at, write)
            if CELL == RNN_TANH:
                grad_pre = grad_h * (1.0 - h * h)
            else:
                grad_pre = tl.where(h > 0.0, grad_h, 0.0)
            tl.store(grad_gates + gg_at, grad_pre.to(gg_type), mask=write)
            tl.store(grad_gates_dst + dst_at, tl.where(write, grad_pre, 0.0).to(gg_type), mask=tile_ok)
            tl.store(grad_h_direct + state_at, tl.where(write, 0.0, grad_h), mask=tile_ok)
        elif CELL == GRU or CELL == GRU_RESET_BEFORE:
            z = _load_block(workspace, ws_at + H, write)
            n = _load_block(workspace, ws_at + 2 * H, write)
            h_before = tl.where(has_before, _load_block(output, before_rows[:, None] * K + cols64[None, :], write & has_before),
                                _load_block(h0, state_at, tile_ok))
            grad_n_pre = grad_h * (1.0 - z) * (1.0 - n * n)
            grad_z_pre = grad_h * (h_before - n) * z * (1.0 - z)
            tl.store(grad_gates + gg_at + H, grad_z_pre.to(gg_type), mask=write)
            tl.store(grad_gates + gg_at + 2 * H, grad_n_pre.to(gg_type), mask=write)
            tl.store(grad_gates_dst + dst_at + HS, tl.where(write, grad_z_pre, 0.0).to(gg_type), mask=tile_ok)
            tl.store(grad_h_direct + state_at, tl.where(write, grad_h * z, grad_h), mask=tile_ok)
            if CELL == GRU:
                r = _load_block(workspace, ws_at, write)
                h_n = _load_block(workspace, ws_at + 3 * H, write)
                grad_r_pre = grad_n_pre * h_n * r * (1.0 - r)
                tl.store(grad_gates + gg_at, grad_r_pre.to(gg_type), mask=write)
                tl.store(grad_gates + gg_at + 3 * H, grad_n_pre.to(gg_type), mask=write)
                tl.store(grad_gates + gg_at + 2 * H, (grad_n_pre * r).to(gg_type), mask=write)
                tl.store(grad_gates_dst + dst_at, tl.where(write, grad_r_pre, 0.0).to(gg_type), mask=tile_ok)
                tl.store(grad_gates_dst + dst_at + 2 * HS, tl.where(write, grad_n_pre * r, 0.0).to(gg_type), mask=tile_ok)
            else:
                tl.store(grad_gates_dst + dst_at + 2 * HS, tl.where(write, grad_n_pre, 0.0).to(gg_type), mask=tile_ok)
        else:
            if CELL == LSTM:
                i = _load_block(workspace, ws_at, write)
                f = _load_block(workspace, ws_at + H, write)
                g = _load_block(workspace, ws_at + 2 * H, write)
                o = _load_block(workspace, ws_at + 3 * H, write)
            else:
                f = _load_block(workspace, ws_at, write)
                g = _load_block(workspace, ws_at + H, write)
                o = _load_block(workspace, ws_at + 2 * H, write)
                i = 1.0 - f
            c_new = _load_block(workspace, ws_at + G * H, write)
            c_before = tl.where(has_before, _load_block(workspace, before_rows[:, None] * (W * H) + G * H + cols64[None, :], write & has_before),
                                _load_block(c0, state_at, tile_ok))
            grad_c = tl.load(grad_c_state + state_at, mask=tile_ok, other=0.0)
            tanh_c = _tanh(c_new)
            grad_o_pre = grad_h * tanh_c * o * (1.0 - o)
            grad_c_new = grad_c + grad_h * o * (1.0 - tanh_c * tanh_c)
            if HAS_PEEP:
                if CELL == LSTM:
                    peep_o = 2 * H
                else:
                    peep_o = H
                grad_c_new += grad_o_pre * _load_block(w_peep, peep_o + cols64, col_ok)[None, :]
            grad_g_pre = grad_c_new * i * (1.0 - g * g)
            if CELL == LSTM:
                grad_f_pre = grad_c_new * c_before * f * (1.0 - f)
                grad_i_pre = grad_c_new * g * i * (1.0 - i)
                grad_c_before = grad_c_new * f
                if HAS_PEEP:
                    grad_c_before += grad_i_pre * _load_block(w_peep, cols64, col_ok)[None, :]
                    grad_c_before += grad_f_pre * _load_block(w_peep, H + cols64, col_ok)[None, :]
                grads = (grad_i_pre, grad_f_pre, grad_g_pre, grad_o_pre)
            else:
                grad_f_pre = grad_c_new * (c_before - g) * f * (1.0 - f)
                grad_c_before = grad_c_new * f
                if HAS_PEEP:
                    grad_c_before += grad_f_pre * _load_block(w_peep, cols64, col_ok)[None, :]
                grads = (grad_f_pre, grad_g_pre, grad_o_pre)
            for gate in tl.static_range(G):
                tl.store(grad_gates + gg_at + gate * H, grads[gate].to(gg_type), mask=write)
                tl.store(grad_gates_dst + dst_at + gate * HS, tl.where(write, grads[gate], 0.0).to(gg_type), mask=tile_ok)
            tl.store(grad_c_state + state_at, grad_c_before, mask=write)
            if not HAS_PROJ:
                tl.store(grad_h_direct + state_at, tl.where(write, 0.0, grad_h), mask=tile_ok)
    if PHASE == BACKWARD_RESET_GATE:
        # (r ⊙ h) gradient = n-gate gradient @ W_hn, then r's gradient; h gets r ⊙ that.
        col_ok = cols < H
        tile_ok = row_ok[:, None] & col_ok[None, :]
        write = active[:, None] & col_ok[None, :]
        state_at = rows[:, None] * H + cols64[None, :]
        ws_at = step_rows[:, None] * (4 * H) + cols64[None, :]
        grad_reset_h = _product(grad_gates_dst + 2 * HS, rows * (3 * HS), row_ok, HS, w_hh, 2 * HS * KS + cols64,
                                cols < KS, KS, hidden_product, rows * H, cols64, col_ok,
                                HIDDEN_FROM_MEMORY, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        r = _load_block(workspace, ws_at, write)
        h_before = tl.where(has_before, _load_block(output, before_rows[:, None] * K + cols64[None, :], write & has_before),
                            _load_block(h0, state_at, tile_ok))
        grad_r_pre = grad_reset_h * h_before * r * (1.0 - r)
        gg_type = grad_gates.dtype.element_ty
        tl.store(grad_gates + step_rows[:, None] * (3 * H) + cols64[None, :], grad_r_pre.to(gg_type), mask=write)
        tl.store(grad_gates_dst + rows[:, None] * (3 * HS) + cols64[None, :], tl.where(write, grad_r_pre, 0.0).to(gg_type), mask=tile_ok)
        grad_direct = tl.load(grad_h_direct + state_at, mask=tile_ok, other=0.0)
        tl.store(grad_h_direct + state_at, grad_direct + tl.where(write, grad_reset_h * r, 0.0), mask=tile_ok)


# ---------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------

@triton.jit
def _step_forward_kernel(
    s,             # processing step
    gates_x,       # (T, B, G*H)
    hidden_gates,  # cell path: (B, N) torch's product for this phase
    w_hh, b_hh, w_hr, w_peep, lengths,   # (G*HS, KS), (G*H,), (KS, HS), (3 or 2, H), (B,)
    h_src, h_dst,  # (B, KS) fp32
    c_state,       # (B, H) fp32
    m_buf,         # (B, HS) fp32
    output,        # (T, B, K)
    workspace,     # (T, B, W)
    T, B, H, K, HS, KS,
    PHASE: tl.constexpr, CELL: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_B_HH: tl.constexpr, HAS_PEEP: tl.constexpr, HAS_PROJ: tl.constexpr,
    HIDDEN_FROM_MEMORY: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    _forward_phase(s, tl.program_id(0), tl.program_id(1), gates_x, hidden_gates, w_hh, b_hh, w_hr, w_peep,
                   lengths, h_src, h_dst, c_state, m_buf, output, workspace, T, B, H, K, HS, KS,
                   PHASE, CELL, REVERSE, HAS_LENGTHS, HAS_B_HH, HAS_PEEP, HAS_PROJ, HIDDEN_FROM_MEMORY,
                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)


@triton.jit
def _sequence_forward_kernel(
    gates_x,       # (T, B, G*H)
    w_hh, b_hh, w_hr, w_peep, lengths,   # (G*HS, KS), (G*H,), (KS, HS), (3 or 2, H), (B,)
    h_state,       # (2, B, KS) fp32: h before step s is h_state[s % 2]
    c_state,       # (B, H) fp32
    m_buf,         # (B, HS) fp32
    output,        # (T, B, K)
    workspace,     # (T, B, W)
    T, B, H, K, HS, KS,
    CELL: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_B_HH: tl.constexpr,
    HAS_PEEP: tl.constexpr, HAS_PROJ: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    # One program per batch tile owns all H units of its rows and walks them in column
    # tiles of BLOCK_N, so its registers do not grow with H.
    pid_b = tl.program_id(0)
    for s in range(T):
        h_src = h_state + tl.cast(s % 2, tl.int64) * B * KS
        h_dst = h_state + tl.cast((s + 1) % 2, tl.int64) * B * KS
        if CELL == GRU_RESET_BEFORE:
            for tile in range(0, tl.cdiv(H, BLOCK_N)):
                _forward_phase(s, pid_b, tile, gates_x, gates_x, w_hh, b_hh, w_hr, w_peep, lengths, h_src, h_dst,
                               c_state, m_buf, output, workspace, T, B, H, K, HS, KS,
                               FORWARD_RESET_GATE, CELL, REVERSE, HAS_LENGTHS, HAS_B_HH, HAS_PEEP, HAS_PROJ,
                               False, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
            tl.debug_barrier()  # r ⊙ h of every unit before the n block's matmul
        for tile in range(0, tl.cdiv(H, BLOCK_N)):
            _forward_phase(s, pid_b, tile, gates_x, gates_x, w_hh, b_hh, w_hr, w_peep, lengths, h_src, h_dst,
                           c_state, m_buf, output, workspace, T, B, H, K, HS, KS,
                           FORWARD_CELL, CELL, REVERSE, HAS_LENGTHS, HAS_B_HH, HAS_PEEP, HAS_PROJ, False,
                           BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        if HAS_PROJ:
            tl.debug_barrier()  # the whole unprojected h before its projection
            for tile in range(0, tl.cdiv(K, BLOCK_N)):
                _forward_phase(s, pid_b, tile, gates_x, gates_x, w_hh, b_hh, w_hr, w_peep, lengths, h_src, h_dst,
                               c_state, m_buf, output, workspace, T, B, H, K, HS, KS,
                               FORWARD_PROJECT, CELL, REVERSE, HAS_LENGTHS, HAS_B_HH, HAS_PEEP, HAS_PROJ,
                               False, BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        tl.debug_barrier()  # the new h of every unit before the next step's matmul


@triton.jit
def _step_backward_kernel(
    s,                 # processing step
    grad_output,       # (T, B, K)
    output,            # (T, B, K)
    h0, c0,            # (B, K), (B, H)
    workspace,         # (T, B, W)
    w_hh, w_hr, w_peep, lengths,   # (G*HS, KS), (KS, HS), (3 or 2, H), (B,)
    grad_gates,        # (T, B, GG)
    grad_gates_src,    # (B, G*HS) step after
    grad_gates_dst,    # (B, G*HS) this step
    grad_h_out,        # (T, B, P)
    grad_h_out_step,   # (B, KS)
    grad_h_direct,     # (B, K) fp32
    grad_c_state,      # (B, H) fp32
    hidden_product,    # cell path: (B, N)
    T, B, H, K, HS, KS,
    PHASE: tl.constexpr, CELL: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_PEEP: tl.constexpr, HAS_PROJ: tl.constexpr, HIDDEN_FROM_MEMORY: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    _backward_phase(s, tl.program_id(0), tl.program_id(1), grad_output, output, h0, c0, workspace, w_hh, w_hr,
                    w_peep, lengths, grad_gates, grad_gates_src, grad_gates_dst, grad_h_out, grad_h_out_step,
                    grad_h_direct, grad_c_state, hidden_product, T, B, H, K, HS, KS,
                    PHASE, CELL, REVERSE, HAS_LENGTHS, HAS_PEEP, HAS_PROJ, HIDDEN_FROM_MEMORY,
                    BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)


@triton.jit
def _sequence_backward_kernel(
    grad_output,       # (T, B, K)
    output,            # (T, B, K)
    h0, c0,            # (B, K), (B, H)
    workspace,         # (T, B, W)
    w_hh, w_hr, w_peep, lengths,   # (G*HS, KS), (KS, HS), (3 or 2, H), (B,)
    grad_gates,        # (T, B, GG)
    grad_gates_steps,  # (2, B, G*HS): step s writes [s % 2] and reads [(s + 1) % 2]
    grad_h_out,        # (T, B, P)
    grad_h_out_step,   # (B, KS)
    grad_h_direct,     # (B, K) fp32
    grad_c_state,      # (B, H) fp32
    T, B, H, K, HS, KS,
    CELL: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_PEEP: tl.constexpr,
    HAS_PROJ: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    G: tl.constexpr = _gate_blocks(CELL)
    pid_b = tl.program_id(0)
    for backwards in range(T):
        s = T - 1 - backwards
        src = grad_gates_steps + tl.cast((s + 1) % 2, tl.int64) * B * (G * HS)
        dst = grad_gates_steps + tl.cast(s % 2, tl.int64) * B * (G * HS)
        if HAS_PROJ:
            for tile in range(0, tl.cdiv(K, BLOCK_N)):
                _backward_phase(s, pid_b, tile, grad_output, output, h0, c0, workspace, w_hh, w_hr, w_peep,
                                lengths, grad_gates, src, dst, grad_h_out, grad_h_out_step, grad_h_direct,
                                grad_c_state, grad_output, T, B, H, K, HS, KS,
                                BACKWARD_PROJECT, CELL, REVERSE, HAS_LENGTHS, HAS_PEEP, HAS_PROJ, False,
                                BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
            tl.debug_barrier()  # the whole projected-h gradient before its product with W_hr
        for tile in range(0, tl.cdiv(H, BLOCK_N)):
            _backward_phase(s, pid_b, tile, grad_output, output, h0, c0, workspace, w_hh, w_hr, w_peep, lengths,
                            grad_gates, src, dst, grad_h_out, grad_h_out_step, grad_h_direct, grad_c_state,
                            grad_output, T, B, H, K, HS, KS,
                            BACKWARD_CELL, CELL, REVERSE, HAS_LENGTHS, HAS_PEEP, HAS_PROJ, False,
                            BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        if CELL == GRU_RESET_BEFORE:
            tl.debug_barrier()  # every n-gate gradient before the (r ⊙ h) gradient
            for tile in range(0, tl.cdiv(H, BLOCK_N)):
                _backward_phase(s, pid_b, tile, grad_output, output, h0, c0, workspace, w_hh, w_hr, w_peep,
                                lengths, grad_gates, src, dst, grad_h_out, grad_h_out_step, grad_h_direct,
                                grad_c_state, grad_output, T, B, H, K, HS, KS,
                                BACKWARD_RESET_GATE, CELL, REVERSE, HAS_LENGTHS, HAS_PEEP, HAS_PROJ, False,
                                BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST_DOT)
        tl.debug_barrier()  # this step's gate gradients before the step before reads them


# ---------------------------------------------------------------------------------------
# Configurations. Keyed on the hidden (or projection) size, never on B: a layer's batch
# changes from call to call, its width does not.
# ---------------------------------------------------------------------------------------

class KernelConfig(NamedTuple):
    block_b: int    # BLOCK_B
    block_n: int    # BLOCK_N: columns per program (per column tile in the persistent kernels)
    block_k: int    # BLOCK_K
    num_warps: int
    maxnreg: Optional[int] = None   # ptxas register cap; None: ptxas chooses


PATHS = ("persistent", "step", "cell")

# The persistent kernels walk H in column tiles, so their registers do not depend on H:
# what bounds them is parallelism. They run B / BLOCK_B programs, each doing all of a
# step's G*H x K matmul for its rows on one SM, where the step kernels spread a step over
# B / BLOCK_B x H / BLOCK_N programs but pay a launch and a trip through memory per step.
# 256 is where that trade is expected to turn (FlashRNN stops its fused kernel at 64-128
# per head); to be measured on a GPU.
MAX_PERSISTENT_HIDDEN = {torch.float32: 256, torch.float16: 256, torch.bfloat16: 256}


def persistent_config(hidden: int, dtype: torch.dtype) -> KernelConfig:
    """The persistent kernels' configuration: the same for every H they take (column tiles).
    A persistent program is one of few on its SM, so it may take every register: left to
    choose, ptxas spills a few bytes to fit more programs per SM. float32 dots run on FMA
    units with wide operand layouts: thinner k chunks over more warps."""
    if dtype == torch.float32:
        return KernelConfig(block_b=16, block_n=32, block_k=16, num_warps=8, maxnreg=255)
    return KernelConfig(block_b=16, block_n=32, block_k=32, num_warps=4, maxnreg=255)


def step_config(columns: int, dtype: torch.dtype) -> KernelConfig:
    """Config of a step-kernel launch producing ``columns`` (H, or P) columns. Wider
    column tiles halve how often a step re-reads h, but spill in float32 (FMA dots)."""
    if columns > 256 and dtype != torch.float32:
        return KernelConfig(block_b=16, block_n=64, block_k=64, num_warps=4)
    return KernelConfig(block_b=16, block_n=32, block_k=64, num_warps=4)


def choose_path(hidden: int, out_size: int, dtype: torch.dtype) -> str:
    return "persistent" if max(hidden, out_size) <= MAX_PERSISTENT_HIDDEN[dtype] else "step"


# ---------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------

class _Layer(NamedTuple):
    steps: int
    batch: int
    input_size: int
    hidden: int
    out_size: int       # K
    gates: int          # G
    cell_code: int
    is_lstm: bool
    dtype: torch.dtype


def _describe(input, w_ih, w_hh, cell) -> _Layer:
    if input.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"seqkern Triton backend: recurrent layers support float32, float16 and bfloat16, got "
            f"{input.dtype}; run float64 on the C++ CPU backend or with SEQKERN_BACKEND=reference"
        )
    if input.device.type != "cuda" and not (input.device.type == "cpu" and _interpreting()):
        raise RuntimeError(
            f"seqkern Triton backend: tensors on {input.device} need a CUDA device, or CPU tensors "
            "under the Triton interpreter (TRITON_INTERPRET=1 set before importing seqkern)"
        )
    steps, batch, input_size = input.shape
    gates = CELL_GATES[cell]
    return _Layer(steps, batch, input_size, w_ih.shape[0] // gates, w_hh.shape[1], gates,
                  CELL_CODES[cell], cell in LSTM_CELLS, input.dtype)


def _check_path(path, layer: _Layer):
    if path not in PATHS:
        raise ValueError(f"seqkern Triton backend: unknown path {path!r}; expected one of {', '.join(PATHS)}")
    widest = max(layer.hidden, layer.out_size)
    if path == "persistent" and widest > MAX_PERSISTENT_HIDDEN[layer.dtype]:
        raise ValueError(
            f"seqkern Triton backend: the persistent kernels take at most "
            f"{MAX_PERSISTENT_HIDDEN[layer.dtype]} hidden units for {layer.dtype}, got {widest}"
        )


def _check_lengths(lengths, steps):
    # One host read, before any kernel: a bad length is reported, never clamped silently.
    if lengths is not None and lengths.numel() and bool(((lengths < 0) | (lengths > steps)).any()):
        raise ValueError(
            f"seqkern recurrent layer: lengths must lie in [0, {steps}] (the number of steps), "
            f"got {lengths.tolist()}"
        )


def _stride(size: int) -> int:
    """Row stride of a matmul operand: a multiple of 16 elements, so that Triton knows
    every row is aligned and loads whole vectors (scalar loads cost ~3x the registers)."""
    return triton.cdiv(size, 16) * 16


def _operand_weights(w_hh, w_hr, gates, hidden, hidden_stride, out_size, out_stride):
    """W_hh as (G*HS, KS) with each gate block starting at a multiple of HS, and W_hr as
    (KS, HS), both 16-byte aligned, zero padded: the matmuls run over the padded extents.
    Copies only when H or K is not a multiple of 16 or a weight is a view at an
    unaligned offset."""
    if hidden_stride != hidden or out_stride != out_size or w_hh.data_ptr() % 16:
        padded = w_hh.new_zeros((gates, hidden_stride, out_stride))
        padded[:, :hidden, :out_size] = w_hh.view(gates, hidden, out_size)
        w_hh = padded.view(gates * hidden_stride, out_stride)
    if w_hr is not None and (hidden_stride != hidden or out_stride != out_size or w_hr.data_ptr() % 16):
        padded = w_hr.new_zeros((out_stride, hidden_stride))
        padded[:out_size, :hidden] = w_hr
        w_hr = padded
    return w_hh, w_hr


def _placeholder(like, dtype=None):
    """Stands in for an absent tensor argument; its kernel flag keeps it unread."""
    return torch.empty(1, dtype=dtype or like.dtype, device=like.device)


def _shared_constexprs(layer: _Layer, reverse, lengths, w_peep, w_hr):
    return dict(
        CELL=layer.cell_code, REVERSE=bool(reverse), HAS_LENGTHS=lengths is not None,
        HAS_PEEP=w_peep is not None, HAS_PROJ=w_hr is not None,
        DOT_PRECISION=_dot_precision(layer.dtype), UPCAST_DOT=_upcast_dot_operands(layer.dtype),
    )


def layer_forward(path, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse):
    """``recurrent_layer_forward`` on a chosen path ("persistent", "step" or "cell")."""
    layer = _describe(input, w_ih, w_hh, cell)
    T, B, H, K = layer.steps, layer.batch, layer.hidden, layer.out_size
    _check_path(path, layer)
    _check_lengths(lengths, T)
    input, h0, w_ih, w_hh = (t.contiguous() for t in (input, h0, w_ih, w_hh))
    b_hh, w_hr, w_peep, lengths = (None if t is None else t.contiguous() for t in (b_hh, w_hr, w_peep, lengths))
    x = input.reshape(T * B, layer.input_size)
    # The input projection of every step at once: one GEMM outside the recurrence.
    gates_x = torch.addmm(b_ih, x, w_ih.t()) if b_ih is not None else x @ w_ih.t()
    output = input.new_zeros((T, B, K))
    workspace = input.new_zeros((T, B, workspace_width(cell, H)))
    HS, KS = _stride(H), _stride(K)
    w_hh_operand, w_hr_operand = _operand_weights(w_hh, w_hr, layer.gates, H, HS, K, KS)
    h_state = input.new_zeros((2, B, KS), dtype=torch.float32)
    h_state[0, :, :K] = h0
    c_state = c0.float().contiguous().clone() if layer.is_lstm else _placeholder(input, torch.float32)
    needs_m = w_hr is not None or cell == "gru_reset_before"
    m_buf = input.new_zeros((B, HS), dtype=torch.float32) if needs_m else _placeholder(input, torch.float32)
    if T > 0 and B > 0:
        args = dict(
            gates_x=gates_x, w_hh=w_hh_operand, b_hh=b_hh if b_hh is not None else _placeholder(input),
            w_hr=w_hr_operand if w_hr is not None else _placeholder(input),
            w_peep=w_peep if w_peep is not None else _placeholder(input),
            lengths=lengths if lengths is not None else _placeholder(input, torch.int64),
            c_state=c_state, m_buf=m_buf, output=output, workspace=workspace,
            T=T, B=B, H=H, K=K, HS=HS, KS=KS,
            HAS_B_HH=b_hh is not None, **_shared_constexprs(layer, reverse, lengths, w_peep, w_hr),
        )
        if path == "persistent":
            config = persistent_config(H, layer.dtype)
            _sequence_forward_kernel[(triton.cdiv(B, config.block_b),)](
                h_state=h_state, BLOCK_B=config.block_b, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
                num_warps=config.num_warps, maxnreg=config.maxnreg, **args)
        else:
            _run_forward_steps(path == "cell", layer, cell, args, h_state, w_hh, w_hr, m_buf)
    h_n = h_state[T % 2, :, :K].to(layer.dtype)
    c_n = c_state.to(layer.dtype) if layer.is_lstm else input.new_empty((0,))
    return output, h_n, c_n, workspace


def _run_forward_steps(from_memory, layer, cell, args, h_state, w_hh, w_hr, m_buf):
    T, B, H, K, dtype = layer.steps, layer.batch, layer.hidden, layer.out_size, layer.dtype

    def launch(s, phase, columns, h_src, h_dst, product):
        config = step_config(columns, dtype)
        grid = (triton.cdiv(B, config.block_b), triton.cdiv(columns, config.block_n))
        _step_forward_kernel[grid](
            s, hidden_gates=product, h_src=h_src, h_dst=h_dst, PHASE=phase, HIDDEN_FROM_MEMORY=from_memory,
            BLOCK_B=config.block_b, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
            num_warps=config.num_warps, **args)

    gate_rows = w_hh.shape[0]
    rz_rows = 2 * H if cell == "gru_reset_before" else gate_rows
    for s in range(T):
        h_src, h_dst = h_state[s % 2], h_state[(s + 1) % 2]
        # The cell path's recurrent GEMMs; the step path does them inside the kernels.
        product = h_src[:, :K].to(dtype) @ w_hh[:rz_rows].t() if from_memory else h_src
        if cell == "gru_reset_before":
            launch(s, FORWARD_RESET_GATE.value, H, h_src, h_dst, product)
            product = m_buf[:, :H].to(dtype) @ w_hh[rz_rows:].t() if from_memory else h_src
        launch(s, FORWARD_CELL.value, H, h_src, h_dst, product)
        if w_hr is not None:
            product = m_buf[:, :H].to(dtype) @ w_hr.t() if from_memory else h_src
            launch(s, FORWARD_PROJECT.value, K, h_src, h_dst, product)


def _previous_states(states, initial, lengths, reverse):
    """(T, B, S): the state each step started from, given the state after each step (zero
    where a sequence did not take the step) and the initial state (B, S)."""
    steps = states.shape[0]
    if not reverse:
        # A sequence that takes step t also took step t - 1.
        return torch.cat([initial[None], states[:-1]])[:steps]
    shifted = torch.cat([states[1:], initial[None]])[:steps]
    if lengths is None:
        return shifted
    after_taken = torch.arange(1, steps + 1, device=states.device)[:, None] < lengths[None, :]
    return torch.where(after_taken[..., None], shifted, initial[None])


def layer_backward(path, grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                   w_peep, lengths, output, workspace, cell, reverse, need_input_grad, need_weight_grad):
    """``recurrent_layer_backward`` on a chosen path ("persistent", "step" or "cell")."""
    layer = _describe(input, w_ih, w_hh, cell)
    T, B, H, K, G, dtype = (layer.steps, layer.batch, layer.hidden, layer.out_size, layer.gates, layer.dtype)
    _check_path(path, layer)
    _check_lengths(lengths, T)
    grad_output, grad_h_n, input, h0, w_ih, w_hh, output, workspace = (
        t.contiguous() for t in (grad_output, grad_h_n, input, h0, w_ih, w_hh, output, workspace))
    c0, w_hr, w_peep, lengths = (None if t is None else t.contiguous() for t in (c0, w_hr, w_peep, lengths))
    absent = input.new_empty((0,))
    gate_width = 4 * H if cell == "gru" else G * H
    grad_gates = input.new_zeros((T, B, gate_width))
    HS, KS = _stride(H), _stride(K)
    w_hh_operand, w_hr_operand = _operand_weights(w_hh, w_hr, G, H, HS, K, KS)
    grad_gates_steps = input.new_zeros((2, B, G * HS))
    grad_h_out = input.new_zeros((T, B, K)) if w_hr is not None else _placeholder(input)
    grad_h_out_step = input.new_zeros((B, KS)) if w_hr is not None else _placeholder(input)
    grad_h_direct = grad_h_n.float().clone()
    if layer.is_lstm:
        has_grad_c = grad_c_n is not None and grad_c_n.numel() > 0
        grad_c_state = grad_c_n.float().contiguous().clone() if has_grad_c else input.new_zeros((B, H), dtype=torch.float32)
    else:
        grad_c_state = _placeholder(input, torch.float32)
    if T > 0 and B > 0:
        args = dict(
            grad_output=grad_output, output=output, h0=h0,
            c0=c0 if c0 is not None else _placeholder(input), workspace=workspace, w_hh=w_hh_operand,
            w_hr=w_hr_operand if w_hr is not None else _placeholder(input),
            w_peep=w_peep if w_peep is not None else _placeholder(input),
            lengths=lengths if lengths is not None else _placeholder(input, torch.int64),
            grad_gates=grad_gates, grad_h_out=grad_h_out, grad_h_out_step=grad_h_out_step,
            grad_h_direct=grad_h_direct, grad_c_state=grad_c_state, T=T, B=B, H=H, K=K, HS=HS, KS=KS,
            **_shared_constexprs(layer, reverse, lengths, w_peep, w_hr),
        )
        if path == "persistent":
            config = persistent_config(H, layer.dtype)
            _sequence_backward_kernel[(triton.cdiv(B, config.block_b),)](
                grad_gates_steps=grad_gates_steps, BLOCK_B=config.block_b, BLOCK_N=config.block_n,
                BLOCK_K=config.block_k, num_warps=config.num_warps, maxnreg=config.maxnreg, **args)
        else:
            _run_backward_steps(path == "cell", layer, cell, args, grad_gates_steps, grad_h_out_step,
                                w_hh_operand, w_hr)

    recurrent_rows = 2 * HS if cell == "gru_reset_before" else G * HS
    # The gradient of h0 is the last product with W_hh, left out of the time loop.
    last_product = grad_gates_steps[0][:, :recurrent_rows] @ w_hh_operand[:recurrent_rows, :K]
    grad_h0 = (grad_h_direct + last_product.float()).to(dtype)
    grad_c0 = grad_c_state.to(dtype) if layer.is_lstm else absent
    grad_input = absent
    flat = grad_gates.view(T * B, gate_width)
    # Input-side and hidden-side pre-activation gradients differ only in GRU's n block.
    grad_x_gates = torch.cat([flat[:, :2 * H], flat[:, 3 * H:]], dim=1) if cell == "gru" else flat
    if need_input_grad:
        grad_input = (grad_x_gates @ w_ih).view(T, B, layer.input_size)
    if not need_weight_grad:
        return grad_input, grad_h0, grad_c0, absent, absent, absent, absent, absent, absent
    grad_h_gates = flat[:, :G * H]
    x = input.view(T * B, layer.input_size)
    grad_w_ih = grad_x_gates.t() @ x
    h_before = _previous_states(output, h0, lengths, reverse).view(T * B, K)
    if cell == "gru_reset_before":
        # The n block multiplied r ⊙ h_{t-1}, which the workspace holds.
        reset_h = workspace[..., 3 * H:].reshape(T * B, H)
        grad_w_hh = torch.cat([grad_h_gates[:, :2 * H].t() @ h_before, grad_h_gates[:, 2 * H:].t() @ reset_h])
    else:
        grad_w_hh = grad_h_gates.t() @ h_before
    grad_b_ih = grad_x_gates.sum(0) if b_ih is not None else absent
    grad_b_hh = grad_h_gates.sum(0) if b_hh is not None else absent
    grad_w_hr = absent
    grad_w_peep = absent
    if w_hr is not None or w_peep is not None:
        c_all = workspace[..., G * H:].float()
        if w_hr is not None:
            o = workspace[..., (G - 1) * H:G * H].float()
            unprojected = (o * torch.tanh(c_all)).to(dtype).view(T * B, H)
            grad_w_hr = grad_h_out.view(T * B, K).t() @ unprojected
        if w_peep is not None:
            c_before = _previous_states(c_all, c0.float(), lengths, reverse)
            # Input and forget gates peek at c_{t-1}, the output gate at c_t.
            peeked = [(0, c_before), (1, c_before), (3, c_all)] if cell == "lstm" else [(0, c_before), (2, c_all)]
            grad_w_peep = torch.stack([
                (grad_gates[..., g * H:(g + 1) * H].float() * state).sum((0, 1)) for g, state in peeked
            ]).to(dtype)
    return grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr, grad_w_peep


def _run_backward_steps(from_memory, layer, cell, args, grad_gates_steps, grad_h_out_step, w_hh_operand, w_hr):
    T, B, H, K, G, dtype = layer.steps, layer.batch, layer.hidden, layer.out_size, layer.gates, layer.dtype
    HS = _stride(H)

    def launch(s, phase, columns, src, dst, product):
        config = step_config(columns, dtype)
        grid = (triton.cdiv(B, config.block_b), triton.cdiv(columns, config.block_n))
        _step_backward_kernel[grid](
            s, grad_gates_src=src, grad_gates_dst=dst, hidden_product=product, PHASE=phase,
            HIDDEN_FROM_MEMORY=from_memory, BLOCK_B=config.block_b, BLOCK_N=config.block_n,
            BLOCK_K=config.block_k, num_warps=config.num_warps, **args)

    recurrent_rows = 2 * HS if cell == "gru_reset_before" else G * HS
    for s in range(T - 1, -1, -1):
        src, dst = grad_gates_steps[(s + 1) % 2], grad_gates_steps[s % 2]
        # The cell path's recurrent GEMMs; the step path does them inside the kernels.
        product = src[:, :recurrent_rows] @ w_hh_operand[:recurrent_rows, :K] if from_memory else src
        if w_hr is not None:
            launch(s, BACKWARD_PROJECT.value, K, src, dst, product)
            product = grad_h_out_step[:, :K] @ w_hr if from_memory else src
        launch(s, BACKWARD_CELL.value, H, src, dst, product)
        if cell == "gru_reset_before":
            product = dst[:, 2 * HS:] @ w_hh_operand[2 * HS:, :K] if from_memory else src
            launch(s, BACKWARD_RESET_GATE.value, H, src, dst, product)


def recurrent_layer_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse):
    """The contract of seqkern.ops.recurrent: persistent kernels up to
    ``MAX_PERSISTENT_HIDDEN`` units, per-step fused kernels above."""
    layer = _describe(input, w_ih, w_hh, cell)
    path = choose_path(layer.hidden, layer.out_size, layer.dtype)
    return layer_forward(path, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths, cell, reverse)


def recurrent_layer_backward(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                             w_peep, lengths, output, workspace, cell, reverse, need_input_grad, need_weight_grad):
    """The contract of seqkern.ops.recurrent, on the path forward chose."""
    layer = _describe(input, w_ih, w_hh, cell)
    path = choose_path(layer.hidden, layer.out_size, layer.dtype)
    return layer_backward(path, grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                          w_peep, lengths, output, workspace, cell, reverse, need_input_grad, need_weight_grad)


# ---------------------------------------------------------------------------------------
# GPU compile configurations (convention: kernels/_compile.py)
# ---------------------------------------------------------------------------------------

_FLOAT32_STATE = {"h_state", "h_src", "h_dst", "c_state", "m_buf", "grad_h_direct", "grad_c_state"}
_INTEGERS = {"s", "T", "B", "H", "K", "HS", "KS"}
# What the launchers guarantee to be 16-aligned at every launch: the strides, the buffers
# they allocate and the weight operands (``_operand_weights``), not user tensors.
_ALIGNED = {
    "forward": ("HS", "KS", "gates_x", "hidden_gates", "w_hh", "w_hr", "h_state", "h_src", "h_dst", "c_state",
                "m_buf", "output", "workspace"),
    "backward": ("HS", "KS", "w_hh", "w_hr", "grad_gates", "grad_gates_steps", "grad_gates_src", "grad_gates_dst",
                 "grad_h_out", "grad_h_out_step", "grad_h_direct", "grad_c_state", "hidden_product"),
}


def _kernel_signature(kernel, dtype):
    from ._compile import pointer, scalar

    signature = {}
    for param in kernel.params:
        name = param.name
        if param.is_constexpr:
            continue
        if name in _INTEGERS:
            signature[name] = scalar(torch.int32)
        elif name == "lengths":
            signature[name] = pointer(torch.int64)
        elif name in _FLOAT32_STATE:
            signature[name] = pointer(torch.float32)
        else:
            signature[name] = pointer(dtype)
    return signature


def _compile_configuration(path, direction, cell, dtype, config, phase=None, peephole=False, projection=False):
    from ._compile import CompileConfiguration

    if path == "persistent":
        kernel = _sequence_forward_kernel if direction == "forward" else _sequence_backward_kernel
    else:
        kernel = _step_forward_kernel if direction == "forward" else _step_backward_kernel
    # Reversed, with lengths: the most work per element these flags can ask for.
    constexprs = dict(
        CELL=CELL_CODES[cell], REVERSE=True, HAS_LENGTHS=True, HAS_PEEP=peephole, HAS_PROJ=projection,
        DOT_PRECISION=_dot_precision(dtype), UPCAST_DOT=False,
        BLOCK_B=config.block_b, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
    )
    if direction == "forward":
        constexprs["HAS_B_HH"] = True
    if path != "persistent":
        constexprs.update(PHASE=phase.value, HIDDEN_FROM_MEMORY=path == "cell")
    variant = cell + "+peephole" * peephole + "+projection" * projection
    label = (f"{path} {direction} {variant} {str(dtype).replace('torch.', '')} BB={config.block_b} "
             f"BN={config.block_n} BK={config.block_k} warps={config.num_warps}"
             + (f" maxnreg={config.maxnreg}" if config.maxnreg else ""))
    aligned = tuple(name for name in _ALIGNED[direction] if name in kernel.arg_names)
    return CompileConfiguration(kernel, label, _kernel_signature(kernel, dtype), constexprs, config.num_warps,
                                maxnreg=config.maxnreg, aligned=aligned)


def COMPILE_CONFIGURATIONS():
    """Every launch configuration the launchers pick (``persistent_config`` and
    ``step_config``, for 16-bit and float32, whose dots and configs differ), each compiled
    with its heaviest cells: the persistent kernels inline every phase, so they get the
    cells with the most phases and gates (LSTM with peepholes and projection; the GRUs,
    which measured tightest in float32 and fp16); the step kernels their heaviest phase
    (matmul + LSTM cell with peepholes, forward and backward); the cell path once. bf16 and
    fp16 compile to the same code but for the mma type."""
    configurations = []
    for cell, dtype, extras in (("lstm", torch.bfloat16, True), ("lstm", torch.float32, True),
                                ("gru", torch.float32, False), ("gru_reset_before", torch.float16, False)):
        config = persistent_config(MAX_PERSISTENT_HIDDEN[dtype], dtype)
        for direction in ("forward", "backward"):
            configurations.append(_compile_configuration(
                "persistent", direction, cell, dtype, config, peephole=extras, projection=extras))
    for columns, dtype in ((256, torch.bfloat16), (256, torch.float32), (1024, torch.bfloat16)):
        for direction, phase in (("forward", FORWARD_CELL), ("backward", BACKWARD_CELL)):
            configurations.append(_compile_configuration(
                "step", direction, "lstm", dtype, step_config(columns, dtype), phase, peephole=True))
    for direction, phase in (("forward", FORWARD_CELL), ("backward", BACKWARD_CELL)):
        configurations.append(_compile_configuration(
            "cell", direction, "lstm", torch.bfloat16, step_config(256, torch.bfloat16), phase, peephole=True))
    return configurations
