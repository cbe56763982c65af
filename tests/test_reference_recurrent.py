"""The NumPy recurrent reference: its hand-written BPTT against finite differences, its
numbers against torch.nn, and the reference backend behind torch.ops.seqkern."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqkern  # noqa: F401  (registers torch.ops.seqkern)
from seqkern import reference
from seqkern.reference import CELL_GATES as GATES, LSTM_CELLS
from support import RECURRENT_VARIANTS as VARIANTS, Inputs, assert_close

ROOT = Path(__file__).resolve().parent.parent
STEPS, BATCH, INPUT, HIDDEN, PROJ = 5, 3, 7, 5, 3
WEIGHT_NAMES = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peep")

LENGTHS = {"full": None, "uneven_with_0": (2, STEPS, 0), "uneven_with_1": (STEPS, 1, 3)}
# Every variant at full length; one variant per cell family with uneven lengths too.
UNEVEN_VARIANTS = ("rnn_relu", "lstm_proj_peephole", "lstm_coupled_peephole", "gru", "gru_reset_before")
LAYER_CASES = [
    pytest.param(variant, reverse, LENGTHS[lengths], id=f"{variant}-{'reverse' if reverse else 'forward'}-{lengths}")
    for variant in VARIANTS for reverse in (False, True) for lengths in LENGTHS
    if lengths == "full" or variant in UNEVEN_VARIANTS
]


def make_weights(draw, cell, input_size, projection, peephole, bias):
    gates = GATES[cell] * HIDDEN
    out_size = PROJ if projection else HIDDEN
    return {
        "w_ih": draw(gates, input_size),
        "w_hh": draw(gates, out_size),
        "b_ih": draw(gates) if bias else None,
        "b_hh": draw(gates) if bias else None,
        "w_hr": draw(PROJ, HIDDEN) if projection else None,
        "w_peep": draw(3 if cell == "lstm" else 2, HIDDEN) if peephole else None,
    }


def array_draw(inputs, scale=0.6):
    return lambda *shape: inputs.randn(*shape, scale=scale).numpy()


def max_relative_error(analytic, numeric):
    scale = np.abs(analytic).max()
    assert scale > 1e-8, "a gradient that is all zero cannot check anything"
    return np.abs(analytic - numeric).max() / scale


def check_against_finite_differences(loss, arrays, analytic, eps=1e-6):
    """Central differences of ``loss()`` w.r.t. every element of every array in
    ``arrays`` (perturbed in place), against ``analytic`` (same keys)."""
    for name, array in arrays.items():
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            original = array[index]
            array[index] = original + eps
            up = loss()
            array[index] = original - eps
            down = loss()
            array[index] = original
            numeric[index] = (up - down) / (2 * eps)
        error = max_relative_error(analytic[name], numeric)
        assert error <= 1e-6, f"{name}: max relative error {error:.3g} against finite differences"


# ---------------------------------------------------------------------------------------
# a) finite differences
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant,reverse,lengths", LAYER_CASES)
def test_layer_backward_matches_finite_differences(variant, reverse, lengths):
    cell, projection, peephole, bias = VARIANTS[variant]
    inputs = Inputs()
    draw = array_draw(inputs)
    is_lstm = cell in LSTM_CELLS
    out_size = PROJ if projection else HIDDEN
    weights = make_weights(draw, cell, INPUT, projection, peephole, bias)
    state = {"input": draw(STEPS, BATCH, INPUT), "h0": draw(BATCH, out_size)}
    if is_lstm:
        state["c0"] = draw(BATCH, HIDDEN)
    lengths = None if lengths is None else np.array(lengths)
    projection_out, projection_h, projection_c = draw(STEPS, BATCH, out_size), draw(BATCH, out_size), draw(BATCH, HIDDEN)

    def run():
        return reference.recurrent_layer_forward(
            state["input"], state["h0"], state.get("c0"), *(weights[n] for n in WEIGHT_NAMES), lengths,
            cell, reverse)

    def loss():
        output, h_n, c_n, _ = run()
        value = (output * projection_out).sum() + (h_n * projection_h).sum()
        return value + (c_n * projection_c).sum() if is_lstm else value

    output, h_n, c_n, workspace = run()
    grads = reference.recurrent_layer_backward(
        projection_out, projection_h, projection_c if is_lstm else None, state["input"], state["h0"],
        state.get("c0"), *(weights[n] for n in WEIGHT_NAMES), lengths, output, workspace, cell, reverse,
        True, True)
    names = ("input", "h0", "c0") + WEIGHT_NAMES
    analytic = dict(zip(names, grads))
    originals = {"c0": None, **state, **weights}
    for name in names:
        assert (analytic[name] is None) == (originals[name] is None), f"{name}: gradient presence"
    perturbed = {**state, **{n: w for n, w in weights.items() if w is not None}}
    check_against_finite_differences(loss, perturbed, analytic)


@pytest.mark.parametrize("variant", ["lstm_proj", "lstm_coupled_peephole", "gru", "gru_reset_before", "rnn_tanh"])
def test_sequence_backward_matches_finite_differences(variant):
    """Bidirectional, 2 layers, uneven lengths with a 0 and a 1."""
    cell, projection, peephole, bias = VARIANTS[variant]
    inputs = Inputs()
    draw = array_draw(inputs)
    is_lstm = cell in LSTM_CELLS
    out_size = PROJ if projection else HIDDEN
    layers, directions = 2, 2
    weights = [
        make_weights(draw, cell, INPUT if layer == 0 else directions * out_size, projection, peephole, bias)
        for layer in range(layers) for _ in range(directions)
    ]
    state = {"input": draw(STEPS, BATCH, INPUT), "h0": draw(layers * directions, BATCH, out_size)}
    if is_lstm:
        state["c0"] = draw(layers * directions, BATCH, HIDDEN)
    lengths = np.array([1, STEPS, 0])
    projection_out = draw(STEPS, BATCH, directions * out_size)
    projection_h = draw(layers * directions, BATCH, out_size)
    projection_c = draw(layers * directions, BATCH, HIDDEN)

    def run():
        return reference.recurrent_sequence_forward(
            state["input"], (state["h0"], state.get("c0")), weights, cell, layers, True, lengths)

    def loss():
        output, h_n, c_n, _ = run()
        value = (output * projection_out).sum() + (h_n * projection_h).sum()
        return value + (c_n * projection_c).sum() if is_lstm else value

    output, h_n, c_n, cache = run()
    assert output.shape == (STEPS, BATCH, directions * out_size)
    assert h_n.shape == (layers * directions, BATCH, out_size)
    assert (output[:, 2] == 0).all() and (output[1:, 0] == 0).all()
    grad_input, grad_h0, grad_c0, weight_grads = reference.recurrent_sequence_backward(
        projection_out, projection_h, projection_c if is_lstm else None, cache)
    analytic = {"input": grad_input, "h0": grad_h0}
    if is_lstm:
        analytic["c0"] = grad_c0
    else:
        assert grad_c0 is None
    perturbed = dict(state)
    for k, (w, g) in enumerate(zip(weights, weight_grads)):
        for name in WEIGHT_NAMES:
            assert (g[name] is None) == (w[name] is None), f"{name}{k}: gradient presence"
            if w[name] is not None:
                perturbed[f"{name}{k}"] = w[name]
                analytic[f"{name}{k}"] = g[name]
    check_against_finite_differences(loss, perturbed, analytic)


def test_lengths_freeze_state_and_zero_padding():
    """A sequence of length len is the same as running it alone for len steps; a length 0
    reports its initial state."""
    cell, projection, peephole, bias = VARIANTS["lstm_proj_peephole"]
    draw = array_draw(Inputs())
    weights = make_weights(draw, cell, INPUT, projection, peephole, bias)
    x, h0, c0 = draw(STEPS, BATCH, INPUT), draw(BATCH, PROJ), draw(BATCH, HIDDEN)
    lengths = np.array([2, STEPS, 0])
    for reverse in (False, True):
        output, h_n, c_n, workspace = reference.recurrent_layer_forward(
            x, h0, c0, *(weights[n] for n in WEIGHT_NAMES), lengths, cell, reverse)
        for b, length in enumerate(lengths):
            alone = reference.recurrent_layer_forward(
                x[:length, b:b + 1], h0[b:b + 1], c0[b:b + 1], *(weights[n] for n in WEIGHT_NAMES), None,
                cell, reverse)
            np.testing.assert_allclose(output[:length, b:b + 1], alone[0], rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(h_n[b:b + 1], alone[1], rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(c_n[b:b + 1], alone[2], rtol=1e-14, atol=1e-15)
            assert (output[length:, b] == 0).all() and (workspace[length:, b] == 0).all()
        np.testing.assert_array_equal(h_n[2], h0[2])
        np.testing.assert_array_equal(c_n[2], c0[2])


def test_workspace_layout():
    """The workspace holds what the contract in seqkern/ops/recurrent.py says."""
    draw = array_draw(Inputs())
    x = draw(STEPS, BATCH, INPUT)
    for cell, width in (("rnn_relu", HIDDEN), ("lstm", 5 * HIDDEN), ("lstm_coupled", 4 * HIDDEN),
                        ("gru", 4 * HIDDEN), ("gru_reset_before", 4 * HIDDEN)):
        weights = make_weights(draw, cell, INPUT, False, False, True)
        h0 = draw(BATCH, HIDDEN)
        c0 = draw(BATCH, HIDDEN) if cell in LSTM_CELLS else None
        output, h_n, c_n, workspace = reference.recurrent_layer_forward(
            x, h0, c0, *(weights[n] for n in WEIGHT_NAMES), None, cell, False)
        assert workspace.shape == (STEPS, BATCH, width), cell
        if cell == "rnn_relu":
            np.testing.assert_array_equal(workspace, output)
        if cell in LSTM_CELLS:
            np.testing.assert_array_equal(workspace[-1, :, -HIDDEN:], c_n)
        else:
            assert c_n is None
        if cell == "gru":
            hidden_n = h0 @ weights["w_hh"][2 * HIDDEN:].T + weights["b_hh"][2 * HIDDEN:]
            np.testing.assert_allclose(workspace[0, :, 3 * HIDDEN:], hidden_n, rtol=1e-14)
        if cell == "gru_reset_before":
            np.testing.assert_allclose(workspace[0, :, 3 * HIDDEN:], workspace[0, :, :HIDDEN] * h0, rtol=1e-14)


def test_bad_cell_and_lengths_are_clear_errors():
    draw = array_draw(Inputs())
    weights = make_weights(draw, "gru", INPUT, False, False, True)
    x, h0 = draw(STEPS, BATCH, INPUT), draw(BATCH, HIDDEN)
    with pytest.raises(ValueError, match="unknown cell 'lstmm'"):
        reference.recurrent_layer_forward(x, h0, None, *(weights[n] for n in WEIGHT_NAMES), None, "lstmm", False)
    with pytest.raises(ValueError, match=r"lengths must have shape \(3,\) with values in \[0, 5\]"):
        reference.recurrent_layer_forward(x, h0, None, *(weights[n] for n in WEIGHT_NAMES),
                                          np.array([1, 6, 2]), "gru", False)


# ---------------------------------------------------------------------------------------
# b) torch.nn agreement
# ---------------------------------------------------------------------------------------

TORCH_CASES = {
    "rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}, "rnn_tanh"),
    "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}, "rnn_relu"),
    "lstm": (torch.nn.LSTM, {}, "lstm"),
    "lstm_proj": (torch.nn.LSTM, {"proj_size": PROJ}, "lstm"),
    "gru": (torch.nn.GRU, {}, "gru"),
}


def torch_weights(module, layers, directions):
    weights = []
    for layer in range(layers):
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            weights.append({
                "w_ih": getattr(module, "weight_ih" + suffix),
                "w_hh": getattr(module, "weight_hh" + suffix),
                "b_ih": getattr(module, "bias_ih" + suffix, None),
                "b_hh": getattr(module, "bias_hh" + suffix, None),
                "w_hr": getattr(module, "weight_hr" + suffix, None),
                "w_peep": None,
            })
    return weights


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed_unsorted"])
@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_sequence_matches_torch_nn(case, packed):
    module_class, options, cell = TORCH_CASES[case]
    layers, directions = 2, 2
    inputs = Inputs()
    torch.manual_seed(7)
    module = module_class(INPUT, HIDDEN, num_layers=layers, bidirectional=True, **options).double()
    is_lstm = cell in LSTM_CELLS
    out_size = options.get("proj_size", HIDDEN)
    x = inputs.randn(STEPS, BATCH, INPUT, requires_grad=True)
    h0 = inputs.randn(layers * directions, BATCH, out_size, requires_grad=True)
    c0 = inputs.randn(layers * directions, BATCH, HIDDEN, requires_grad=True)
    projection_out = inputs.randn(STEPS, BATCH, directions * out_size)
    projection_h = inputs.randn(layers * directions, BATCH, out_size)
    projection_c = inputs.randn(layers * directions, BATCH, HIDDEN)
    lengths = torch.tensor([2, STEPS, 1]) if packed else None

    hx = (h0, c0) if is_lstm else h0
    if packed:
        packed_output, final = module(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
        output, _ = pad_packed_sequence(packed_output, total_length=STEPS)
    else:
        output, final = module(x, hx)
    h_n, c_n = final if is_lstm else (final, None)
    loss = (output * projection_out).sum() + (h_n * projection_h).sum()
    if is_lstm:
        loss = loss + (c_n * projection_c).sum()
    loss.backward()

    weights = torch_weights(module, layers, directions)
    weight_arrays = [{n: None if w is None else w.detach().numpy() for n, w in ws.items()} for ws in weights]
    ref_output, ref_h_n, ref_c_n, cache = reference.recurrent_sequence_forward(
        x.detach().numpy(), (h0.detach().numpy(), c0.detach().numpy() if is_lstm else None), weight_arrays,
        cell, layers, True, None if lengths is None else lengths.numpy())
    assert_close(output, ref_output, dtype=torch.float64, msg="output")
    assert_close(h_n, ref_h_n, dtype=torch.float64, msg="h_n")
    if is_lstm:
        assert_close(c_n, ref_c_n, dtype=torch.float64, msg="c_n")
    else:
        assert ref_c_n is None
    grad_input, grad_h0, grad_c0, weight_grads = reference.recurrent_sequence_backward(
        projection_out.numpy(), projection_h.numpy(), projection_c.numpy() if is_lstm else None, cache)
    assert_close(x.grad, grad_input, dtype=torch.float64, msg="grad input")
    assert_close(h0.grad, grad_h0, dtype=torch.float64, msg="grad h0")
    if is_lstm:
        assert_close(c0.grad, grad_c0, dtype=torch.float64, msg="grad c0")
    for k, (ws, gs) in enumerate(zip(weights, weight_grads)):
        for name, weight in ws.items():
            if weight is None:
                assert gs[name] is None, f"{name}{k}"
            else:
                assert_close(weight.grad, gs[name], dtype=torch.float64, msg=f"grad {name}{k}")


# ---------------------------------------------------------------------------------------
# c) the reference backend behind torch.ops.seqkern.recurrent_layer
# ---------------------------------------------------------------------------------------

def op_arguments(variant, reverse, lengths):
    cell, projection, peephole, bias = VARIANTS[variant]
    inputs = Inputs()
    draw = lambda *shape: inputs.randn(*shape, scale=0.6)  # noqa: E731
    out_size = PROJ if projection else HIDDEN
    weights = make_weights(draw, cell, INPUT, projection, peephole, bias)
    x, h0 = draw(STEPS, BATCH, INPUT), draw(BATCH, out_size)
    c0 = draw(BATCH, HIDDEN) if cell in LSTM_CELLS else None
    lengths = None if lengths is None else torch.tensor(lengths, dtype=torch.int64)
    return (x, h0, c0, *(weights[n] for n in WEIGHT_NAMES), lengths, cell, reverse)


OP_CASES = [("lstm_proj_peephole", True, (2, STEPS, 0)), ("gru_reset_before", False, (STEPS, 1, 3)),
            ("rnn_relu", True, None), ("lstm_coupled", False, None)]


@pytest.mark.parametrize("variant,reverse,lengths", OP_CASES)
def test_reference_backend_through_the_op(monkeypatch, variant, reverse, lengths):
    monkeypatch.setenv("SEQKERN_BACKEND", "reference")
    args = op_arguments(variant, reverse, lengths)
    cell = args[-2]
    is_lstm = cell in LSTM_CELLS
    differentiable = [a for a in args[:9] if a is not None]
    for tensor in differentiable:
        tensor.requires_grad_(True)
    output, h_n, c_n, workspace = torch.ops.seqkern.recurrent_layer(*args)
    inputs = Inputs(seed=11)
    projection_out, projection_h = inputs.randn(*output.shape), inputs.randn(*h_n.shape)
    projection_c = inputs.randn(*c_n.shape)
    loss = (output * projection_out).sum() + (h_n * projection_h).sum()
    if is_lstm:
        loss = loss + (c_n * projection_c).sum()
    grads = torch.autograd.grad(loss, differentiable)

    arrays = [a.detach().numpy() if isinstance(a, torch.Tensor) else a for a in args]
    expected = reference.recurrent_layer_forward(*arrays)
    assert_close(output, expected[0], dtype=torch.float64)
    assert_close(h_n, expected[1], dtype=torch.float64)
    assert_close(workspace, expected[3], dtype=torch.float64)
    if is_lstm:
        assert_close(c_n, expected[2], dtype=torch.float64)
    else:
        assert c_n.shape == (0,)
    expected_grads = reference.recurrent_layer_backward(
        projection_out.numpy(), projection_h.numpy(), projection_c.numpy() if is_lstm else None,
        *arrays[:10], expected[0], expected[3], cell, reverse, True, True)
    present = [g for a, g in zip(args[:9], expected_grads) if a is not None]
    assert len(present) == len(grads)
    for actual, wanted in zip(grads, present):
        assert_close(actual, wanted, dtype=torch.float64)


@pytest.mark.parametrize("variant,reverse,lengths", [("lstm_peephole", False, (2, STEPS, 1)),
                                                     ("gru", True, (STEPS, 0, 3))])
def test_opcheck_with_reference_backend(monkeypatch, variant, reverse, lengths):
    monkeypatch.setenv("SEQKERN_BACKEND", "reference")
    args = op_arguments(variant, reverse, lengths)
    for tensor in args[:9]:
        if tensor is not None:
            tensor.requires_grad_(True)
    torch.library.opcheck(torch.ops.seqkern.recurrent_layer.default, args)


# ---------------------------------------------------------------------------------------
# d) the reference stands alone
# ---------------------------------------------------------------------------------------

def test_reference_does_not_import_torch():
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location("standalone_reference", {str(ROOT / "seqkern" / "reference.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        output = module.recurrent_layer_forward(np.ones((2, 1, 3)), np.zeros((1, 2)), None, np.ones((2, 3)),
                                                np.ones((2, 2)), None, None, None, None, None, "rnn_tanh", False)
        assert output[0].shape == (2, 1, 2)
        loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
        print("torch modules:", loaded)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "torch modules: []"
