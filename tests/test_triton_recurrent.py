"""Triton recurrent kernels (seqkern.kernels.recurrent) against the NumPy reference.

Without a GPU they run under the Triton interpreter on CPU tensors (tests/conftest.py
switches it on). Every path (persistent, step, cell), cell and variant runs forward and
backward on odd sizes with uneven lengths, forward and reversed.

float32 is held to the project's tolerance table. float16 / bfloat16 are held to the
rule "error against the float64 reference at most 2x the error of the same layer written
with plain torch ops in that dtype" (``_same_dtype_layer`` below, differentiated by
autograd), per result tensor, as a maximum absolute error. The only slack is one unit
in the last place of the result's largest value: both errors are a few ulps, so a 0.5 vs
1 ulp difference alone would double one of them. Measured over 1140 result tensors with
fresh seeds, about 0.4% of the bf16 gradients still land 1-2 ulps beyond that; the
NumPy backward run on the kernels' own forward reproduces them (both forwards are
within one ulp of the truth, and the tiny test sums amplify which way each saved value
rounded), so the seeds below are fixed rather than drawn per run.
"""
import math
import os
from typing import NamedTuple, Optional

import numpy as np
import pytest
import torch

from support import Inputs, assert_close, with_odd_unit_strides

from seqkern import reference
from seqkern.kernels import recurrent as triton_recurrent
from seqkern.ops.recurrent import CELL_GATES, LSTM_CELLS, workspace_width

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
    reason="the Triton backend needs CUDA, or the interpreter for CPU tensors",
)

ARGUMENT_NAMES = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peep", "lengths")
FORWARD_NAMES = ("output", "h_n", "c_n", "workspace")
BACKWARD_NAMES = ("grad_input", "grad_h0", "grad_c0", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh",
                  "grad_w_hr", "grad_w_peep")
DIFFERENTIABLE = ARGUMENT_NAMES[:-1]


class Variant(NamedTuple):
    cell: str
    hidden: int
    projection: Optional[int] = None
    peephole: bool = False


VARIANTS = {
    "rnn_tanh": Variant("rnn_tanh", 7),
    "rnn_relu": Variant("rnn_relu", 6),
    "lstm": Variant("lstm", 7),
    "lstm_peephole": Variant("lstm", 6, peephole=True),
    "lstm_projection": Variant("lstm", 9, projection=5),
    "lstm_coupled": Variant("lstm_coupled", 7),
    "lstm_coupled_peephole_projection": Variant("lstm_coupled", 8, projection=5, peephole=True),
    "gru": Variant("gru", 7),
    "gru_reset_before": Variant("gru_reset_before", 10),
}


class Layer(NamedTuple):
    arguments: dict      # ARGUMENT_NAMES -> tensor or None
    gradients: tuple     # grad_output, grad_h_n, grad_c_n (None without a cell state)
    cell: str


def make_layer(variant, dtype, steps=4, batch=3, input_size=5, lengths=True, biases=True, seed=0):
    draw = Inputs(seed=1000 + seed)
    cell, hidden = variant.cell, variant.hidden
    gates = CELL_GATES[cell]
    out_size = variant.projection or hidden
    bound = 1.0 / math.sqrt(hidden)   # torch.nn's initialisation range

    def weight(*shape):
        return draw.uniform(*shape, low=-bound, high=bound)

    is_lstm = cell in LSTM_CELLS
    arguments = dict(
        input=draw.randn(steps, batch, input_size),
        h0=draw.randn(batch, out_size, scale=0.5),
        c0=draw.randn(batch, hidden, scale=0.5) if is_lstm else None,
        w_ih=weight(gates * hidden, input_size),
        w_hh=weight(gates * hidden, out_size),
        b_ih=weight(gates * hidden) if biases else None,
        b_hh=weight(gates * hidden) if biases else None,
        w_hr=weight(out_size, hidden) if variant.projection else None,
        w_peep=weight(3 if cell == "lstm" else 2, hidden) if variant.peephole else None,
    )
    arguments = {name: None if t is None else t.to(device=DEVICE, dtype=dtype) for name, t in arguments.items()}
    arguments["lengths"] = draw.lengths(batch, steps).to(DEVICE) if lengths else None
    gradients = (
        draw.randn(steps, batch, out_size).to(device=DEVICE, dtype=dtype),
        draw.randn(batch, out_size).to(device=DEVICE, dtype=dtype),
        draw.randn(batch, hidden).to(device=DEVICE, dtype=dtype) if is_lstm else None,
    )
    return Layer(arguments, gradients, cell)


def _positional(layer):
    return [layer.arguments[name] for name in ARGUMENT_NAMES]


def run_triton(path, layer, reverse, need_input_grad=True, need_weight_grad=True):
    forward = triton_recurrent.layer_forward(path, *_positional(layer), layer.cell, reverse)
    output, _, _, workspace = forward
    backward = triton_recurrent.layer_backward(
        path, *layer.gradients, *_positional(layer), output, workspace, layer.cell, reverse,
        need_input_grad, need_weight_grad)
    return dict(zip(FORWARD_NAMES, forward)), dict(zip(BACKWARD_NAMES, backward))


def _array(tensor):
    if tensor is None:
        return None
    tensor = tensor.detach().cpu()
    return tensor.numpy() if tensor.dtype == torch.int64 else tensor.double().numpy()


def run_reference(layer, reverse):
    """The NumPy reference on the same (already rounded) inputs, in float64."""
    arguments = [_array(t) for t in _positional(layer)]
    forward = reference.recurrent_layer_forward(*arguments, layer.cell, reverse)
    output, _, _, workspace = forward
    backward = reference.recurrent_layer_backward(
        *[_array(g) for g in layer.gradients], *arguments, output, workspace, layer.cell, reverse, True, True)
    return dict(zip(FORWARD_NAMES, forward)), dict(zip(BACKWARD_NAMES, backward))


def _same_dtype_layer(layer, reverse):
    """The layer written with plain torch ops in the inputs' dtype (SPEC.md), gradients by
    autograd: what a user gets without seqkern, the yardstick for fp16/bf16 error."""
    arguments = {name: None if t is None or name == "lengths" else t.detach().clone().requires_grad_(True)
                 for name, t in layer.arguments.items()}
    x, h, c = arguments["input"], arguments["h0"], arguments["c0"]
    w_ih, w_hh, b_ih, b_hh = arguments["w_ih"], arguments["w_hh"], arguments["b_ih"], arguments["b_hh"]
    w_hr, w_peep, lengths = arguments["w_hr"], arguments["w_peep"], layer.arguments["lengths"]
    cell = layer.cell
    steps, batch, _ = x.shape
    hidden = w_ih.shape[0] // CELL_GATES[cell]
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.int64, device=x.device)
    time = torch.arange(steps, device=x.device)[:, None]
    active = time < lengths[None, :]
    # A reversed sequence is the forward pass over the sequence flipped within its length.
    order = torch.where(active, lengths[None, :] - 1 - time, time) if reverse else time.expand(steps, batch)

    def reorder(tensor):
        return tensor.gather(0, order[..., None].expand_as(tensor))

    x_gates = reorder(x) @ w_ih.t()
    if b_ih is not None:
        x_gates = x_gates + b_ih
    hidden_rows = 2 * hidden if cell == "gru_reset_before" else w_hh.shape[0]
    outputs, rows = [], []
    for t in range(steps):
        h_gates = h @ w_hh[:hidden_rows].t()
        if b_hh is not None:
            h_gates = h_gates + b_hh[:hidden_rows]
        blocks = list((x_gates[t]).split(hidden, dim=1))
        hidden_blocks = list(h_gates.split(hidden, dim=1))
        c_new = None
        if cell.startswith("rnn"):
            pre = blocks[0] + hidden_blocks[0]
            h_new = torch.relu(pre) if cell == "rnn_relu" else torch.tanh(pre)
            row = [h_new]
        elif cell in LSTM_CELLS:
            pre = [a + b for a, b in zip(blocks, hidden_blocks)]
            if cell == "lstm":
                i_pre, f_pre, g_pre, o_pre = pre
            else:
                f_pre, g_pre, o_pre = pre
            if w_peep is not None:
                if cell == "lstm":
                    i_pre = i_pre + w_peep[0] * c
                f_pre = f_pre + w_peep[-2] * c
            f, g = torch.sigmoid(f_pre), torch.tanh(g_pre)
            i = torch.sigmoid(i_pre) if cell == "lstm" else 1 - f
            c_new = f * c + i * g
            if w_peep is not None:
                o_pre = o_pre + w_peep[-1] * c_new
            o = torch.sigmoid(o_pre)
            h_new = o * torch.tanh(c_new)
            row = ([i] if cell == "lstm" else []) + [f, g, o, c_new]
            if w_hr is not None:
                h_new = h_new @ w_hr.t()
        else:
            r = torch.sigmoid(blocks[0] + hidden_blocks[0])
            z = torch.sigmoid(blocks[1] + hidden_blocks[1])
            if cell == "gru":
                last = hidden_blocks[2]
                n = torch.tanh(blocks[2] + r * last)
            else:
                last = r * h
                n_hidden = last @ w_hh[hidden_rows:].t()
                if b_hh is not None:
                    n_hidden = n_hidden + b_hh[hidden_rows:]
                n = torch.tanh(blocks[2] + n_hidden)
            h_new = (1 - z) * n + z * h
            row = [r, z, n, last]
        taken = active[t][:, None]
        h = torch.where(taken, h_new, h)
        if c_new is not None:
            c = torch.where(taken, c_new, c)
        outputs.append(torch.where(taken, h_new, torch.zeros_like(h_new)))
        rows.append(torch.where(taken, torch.cat(row, dim=1), torch.zeros(1, dtype=x.dtype, device=x.device)))
    output, workspace = reorder(torch.stack(outputs)), reorder(torch.stack(rows))
    forward = dict(output=output, h_n=h, c_n=c, workspace=workspace)
    grad_output, grad_h_n, grad_c_n = layer.gradients
    objective = (output * grad_output).sum() + (h * grad_h_n).sum()
    if c is not None:
        objective = objective + (c * grad_c_n).sum()
    wanted = [arguments[name] for name in DIFFERENTIABLE]
    grads = torch.autograd.grad(objective, [t for t in wanted if t is not None])
    grads = iter(grads)
    backward = {name: (next(grads) if t is not None else None) for name, t in zip(BACKWARD_NAMES, wanted)}
    return {k: None if v is None else v.detach() for k, v in forward.items()}, backward


def _check_absent(name, actual):
    assert actual.numel() == 0, f"{name}: expected an empty (0,) tensor for an absent result, got {tuple(actual.shape)}"


def check_float32(results, expected):
    for name, value in expected.items():
        if value is None:
            _check_absent(name, results[name])
        else:
            assert_close(results[name], value, torch.float32, msg=name)


def check_against_same_dtype(results, expected, same_dtype, dtype):
    for name, value in expected.items():
        if value is None:
            _check_absent(name, results[name])
            continue
        value = torch.from_numpy(value)
        kernel_error = (results[name].detach().cpu().double() - value).abs().max().item()
        torch_error = (same_dtype[name].cpu().double() - value).abs().max().item()
        largest = value.abs().max().item()
        one_ulp = torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(largest)) if largest > 0 else 0.0
        assert kernel_error <= 2 * torch_error + one_ulp, (
            f"{name}: error {kernel_error:.3g} against the float64 reference, more than twice the "
            f"{torch_error:.3g} of plain torch in {dtype} (+ one ulp {one_ulp:.3g})"
        )


# ---------------------------------------------------------------------------------------
# Every path, cell and variant
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("path", ["persistent", "step"])
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_float32_matches_reference(variant, path, reverse):
    layer = make_layer(VARIANTS[variant], torch.float32, seed=2 * list(VARIANTS).index(variant) + reverse)
    forward, backward = run_triton(path, layer, reverse)
    expected_forward, expected_backward = run_reference(layer, reverse)
    check_float32(forward, expected_forward)
    check_float32(backward, expected_backward)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_cell_path_float32_matches_reference(variant):
    """Fused pointwise cells (forward and backward) with torch's GEMM per step."""
    layer = make_layer(VARIANTS[variant], torch.float32, seed=7)
    forward, backward = run_triton("cell", layer, True)
    expected_forward, expected_backward = run_reference(layer, True)
    check_float32(forward, expected_forward)
    check_float32(backward, expected_backward)


HALF_DTYPES = (torch.float16, torch.bfloat16)
# The cell path shares the step kernels' epilogues; two variants cover what is its own.
HALF_CASES = (
    [(variant, dtype, path) for variant in VARIANTS for dtype in HALF_DTYPES for path in ("persistent", "step")]
    + [(variant, dtype, "cell") for variant in ("lstm_coupled_peephole_projection", "gru_reset_before")
       for dtype in HALF_DTYPES]
)


@pytest.mark.parametrize("variant, dtype, path", HALF_CASES, ids=str)
def test_half_precision_within_twice_plain_torch_error(variant, dtype, path):
    layer = make_layer(VARIANTS[variant], dtype, seed=11)
    forward, backward = run_triton(path, layer, True)
    expected_forward, expected_backward = run_reference(layer, True)
    same_forward, same_backward = _same_dtype_layer(layer, True)
    check_against_same_dtype(forward, expected_forward, same_forward, dtype)
    check_against_same_dtype(backward, expected_backward, same_backward, dtype)


# Several column tiles (BLOCK_N = 32), k chunks, row blocks (BLOCK_B = 16) and the padded
# operand strides (H, P not multiples of 16).
WIDE = {
    "lstm_peephole_projection": Variant("lstm", 40, projection=33, peephole=True),
    "gru_reset_before": Variant("gru_reset_before", 37),
}


@pytest.mark.parametrize("path", ["persistent", "step"])
@pytest.mark.parametrize("variant", WIDE, ids=str)
def test_wide_layers_tile_columns_rows_and_k(variant, path):
    layer = make_layer(WIDE[variant], torch.float32, steps=3, batch=19, input_size=6, seed=3)
    forward, backward = run_triton(path, layer, True)
    expected_forward, expected_backward = run_reference(layer, True)
    check_float32(forward, expected_forward)
    check_float32(backward, expected_backward)


def test_wide_bfloat16_persistent_layer_within_twice_plain_torch_error():
    layer = make_layer(WIDE["lstm_peephole_projection"], torch.bfloat16, steps=3, batch=19, input_size=6, seed=5)
    forward, backward = run_triton("persistent", layer, False)
    expected_forward, expected_backward = run_reference(layer, False)
    same_forward, same_backward = _same_dtype_layer(layer, False)
    check_against_same_dtype(forward, expected_forward, same_forward, torch.bfloat16)
    check_against_same_dtype(backward, expected_backward, same_backward, torch.bfloat16)


# ---------------------------------------------------------------------------------------
# Arguments, flags and edges
# ---------------------------------------------------------------------------------------

def test_without_biases_or_lengths():
    layer = make_layer(VARIANTS["gru"], torch.float32, lengths=False, biases=False, seed=2)
    forward, backward = run_triton("persistent", layer, False)
    expected_forward, expected_backward = run_reference(layer, False)
    check_float32(forward, expected_forward)
    check_float32(backward, expected_backward)
    assert backward["grad_b_ih"].numel() == 0 and backward["grad_b_hh"].numel() == 0


def test_unneeded_gradients_are_empty():
    layer = make_layer(VARIANTS["lstm_peephole"], torch.float32, seed=4)
    _, backward = run_triton("step", layer, False, need_input_grad=False, need_weight_grad=False)
    _, expected = run_reference(layer, False)
    for name in ("grad_input", "grad_w_ih", "grad_w_hh", "grad_b_ih", "grad_b_hh", "grad_w_hr", "grad_w_peep"):
        _check_absent(name, backward[name])
    assert_close(backward["grad_h0"], expected["grad_h0"], torch.float32)
    assert_close(backward["grad_c0"], expected["grad_c0"], torch.float32)


def test_zero_length_sequence_keeps_its_initial_state():
    layer = make_layer(VARIANTS["lstm"], torch.float32, seed=6)
    layer.arguments["lengths"] = torch.tensor([4, 0, 2], device=DEVICE)
    forward, backward = run_triton("persistent", layer, True)
    expected_forward, expected_backward = run_reference(layer, True)
    check_float32(forward, expected_forward)
    check_float32(backward, expected_backward)
    assert torch.equal(forward["h_n"][1], layer.arguments["h0"][1])


def test_no_steps():
    layer = make_layer(VARIANTS["lstm_projection"], torch.float32, steps=0, lengths=False)
    forward, backward = run_triton("step", layer, False)
    assert forward["output"].shape == (0, 3, 5) and forward["workspace"].shape == (0, 3, 5 * 9)
    assert torch.equal(forward["h_n"], layer.arguments["h0"])
    assert torch.equal(backward["grad_h0"], layer.gradients[1])
    assert torch.equal(backward["grad_w_hh"], torch.zeros_like(layer.arguments["w_hh"]))


def test_weight_views_at_unaligned_offsets():
    """Weights that are views into a larger buffer (as torch.nn's flat weights may be) at
    an offset that is not 16-byte aligned: the launcher copies them into aligned operands."""
    layer = make_layer(VARIANTS["lstm"], torch.float32, seed=8)
    w_hh = layer.arguments["w_hh"]
    storage = torch.zeros(w_hh.numel() + 1, dtype=w_hh.dtype, device=DEVICE)
    storage[1:] = w_hh.reshape(-1)
    layer.arguments["w_hh"] = storage[1:].view_as(w_hh)
    assert layer.arguments["w_hh"].data_ptr() % 16 != 0
    forward, backward = run_triton("step", layer, False)
    expected_forward, expected_backward = run_reference(layer, False)
    check_float32(forward, expected_forward)
    check_float32(backward, expected_backward)


@pytest.mark.parametrize("path", ["persistent", "step", "cell"])
def test_size_one_dimensions_with_any_stride_match_reference(path):
    """Contiguous arguments whose size-1 dimensions (B = 1, I = 1) have strides a copy would
    not have, as transposes leave them."""
    layer = make_layer(VARIANTS["lstm_projection"], torch.float32, batch=1, input_size=1, seed=9)
    for name, tensor in list(layer.arguments.items()):
        if tensor is not None and tensor.is_floating_point() and 1 in tensor.shape:
            layer.arguments[name] = with_odd_unit_strides(tensor)
    gradients = tuple(with_odd_unit_strides(g) for g in layer.gradients)
    layer = layer._replace(gradients=gradients)
    forward, backward = run_triton(path, layer, False)
    expected_forward, expected_backward = run_reference(layer, False)
    check_float32(forward, expected_forward)
    check_float32(backward, expected_backward)


def test_float64_is_refused_with_a_clear_error():
    layer = make_layer(VARIANTS["gru"], torch.float64)
    with pytest.raises(TypeError, match="float32, float16 and bfloat16.*float64"):
        triton_recurrent.recurrent_layer_forward(*_positional(layer), "gru", False)


def test_lengths_out_of_range_are_refused():
    layer = make_layer(VARIANTS["rnn_tanh"], torch.float32)
    layer.arguments["lengths"] = torch.tensor([4, 5, 1], device=DEVICE)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\]"):
        triton_recurrent.recurrent_layer_forward(*_positional(layer), "rnn_tanh", False)


def test_unknown_path_and_too_wide_persistent_are_refused():
    layer = make_layer(VARIANTS["rnn_tanh"], torch.float32)
    with pytest.raises(ValueError, match="unknown path 'fast'"):
        triton_recurrent.layer_forward("fast", *_positional(layer), "rnn_tanh", False)
    wide = make_layer(Variant("rnn_tanh", 257), torch.float16, steps=1, batch=1, input_size=1)
    with pytest.raises(ValueError, match="at most 256 hidden units"):
        triton_recurrent.layer_forward("persistent", *_positional(wide), "rnn_tanh", False)


class _LaunchCounter:
    def __init__(self, kernel):
        self.kernel = kernel
        self.launches = 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


@pytest.mark.parametrize("hidden, expected_path", [(8, "persistent"), (9, "step")])
def test_contract_functions_switch_from_persistent_to_step_above_the_limit(monkeypatch, hidden, expected_path):
    monkeypatch.setitem(triton_recurrent.MAX_PERSISTENT_HIDDEN, torch.float32, 8)
    counters = {name: _LaunchCounter(getattr(triton_recurrent, name))
                for name in ("_sequence_forward_kernel", "_sequence_backward_kernel",
                             "_step_forward_kernel", "_step_backward_kernel")}
    for name, counter in counters.items():
        monkeypatch.setattr(triton_recurrent, name, counter)
    layer = make_layer(Variant("lstm", hidden), torch.float32, seed=9)
    arguments = _positional(layer)
    forward = triton_recurrent.recurrent_layer_forward(*arguments, "lstm", True)
    backward = triton_recurrent.recurrent_layer_backward(
        *layer.gradients, *arguments, forward[0], forward[3], "lstm", True, True, True)
    expected_forward, expected_backward = run_reference(layer, True)
    check_float32(dict(zip(FORWARD_NAMES, forward)), expected_forward)
    check_float32(dict(zip(BACKWARD_NAMES, backward)), expected_backward)
    sequence = counters["_sequence_forward_kernel"].launches + counters["_sequence_backward_kernel"].launches
    step = counters["_step_forward_kernel"].launches + counters["_step_backward_kernel"].launches
    assert (sequence, step) == ((2, 0) if expected_path == "persistent" else (0, 2 * layer.arguments["input"].shape[0]))


def test_torch_op_runs_through_the_triton_backend(monkeypatch):
    """torch.ops.seqkern.recurrent_layer with SEQKERN_BACKEND=triton, autograd included,
    against the same op on the reference backend."""
    layer = make_layer(VARIANTS["lstm_coupled_peephole_projection"], torch.float32, seed=10)

    def run(backend):
        monkeypatch.setenv("SEQKERN_BACKEND", backend)
        arguments = {name: None if t is None or name == "lengths" else t.detach().clone().requires_grad_(True)
                     for name, t in layer.arguments.items()}
        arguments["lengths"] = layer.arguments["lengths"]
        output, h_n, c_n, _ = torch.ops.seqkern.recurrent_layer(
            *[arguments[name] for name in ARGUMENT_NAMES], layer.cell, True)
        grad_output, grad_h_n, grad_c_n = layer.gradients
        ((output * grad_output).sum() + (h_n * grad_h_n).sum() + (c_n * grad_c_n).sum()).backward()
        return [output, h_n, c_n] + [arguments[name].grad for name in DIFFERENTIABLE]

    results, expected = run("triton"), run("reference")
    for actual, wanted in zip(results, expected):
        assert_close(actual, wanted, torch.float32)


@pytest.fixture
def cuda_matmul_flags():
    # torch's backend flag objects do not support monkeypatch's undo; restore by hand.
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    yield matmul
    matmul.allow_tf32 = saved


def test_kernel_block_tables_match_the_contract():
    for name, code in triton_recurrent.CELL_CODES.items():
        assert triton_recurrent._gate_blocks(code) == CELL_GATES[name]
        assert triton_recurrent._workspace_blocks(code) * 5 == workspace_width(name, 5)
        expected = 4 if name == "gru" else CELL_GATES[name]
        assert triton_recurrent._gate_gradient_blocks(code) == expected


def test_dot_precision_follows_torch_tf32_switch(cuda_matmul_flags):
    cuda_matmul_flags.allow_tf32 = True
    assert triton_recurrent._dot_precision(torch.float32) == "tf32"
    assert triton_recurrent._dot_precision(torch.bfloat16) == "ieee"
    cuda_matmul_flags.allow_tf32 = False
    assert triton_recurrent._dot_precision(torch.float32) == "ieee"


def test_bfloat16_dot_operands_are_widened_only_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_recurrent._upcast_dot_operands(torch.bfloat16)
    assert not triton_recurrent._upcast_dot_operands(torch.float16)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not triton_recurrent._upcast_dot_operands(torch.bfloat16)
