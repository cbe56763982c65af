"""seqkern.nn RNNCell / LSTMCell / GRUCell against torch.nn with the same weights and against
seqkern.reference (one step of the layer op), values and gradients, on each CPU backend."""
import pytest
import torch

import seqkern
from nn_support import (CELL_BATCH as BATCH, assert_cell_runs_close, backend, cell_data,  # noqa: F401
                        draw_weights,
                        reference_cell_run, run_cell, twin)
from support import Inputs, assert_close

INPUT, HIDDEN = 7, 13

# (class, nonlinearity, bias, batched, hx given), pairwise over the last three per class.
CASES = [
    ("RNNCell", "tanh", True, True, True),
    ("RNNCell", "tanh", False, False, False),
    ("RNNCell", "relu", False, True, False),
    ("RNNCell", "relu", True, False, True),
    ("LSTMCell", None, True, True, True),
    ("LSTMCell", None, False, True, False),
    ("LSTMCell", None, True, False, False),
    ("LSTMCell", None, False, False, True),
    ("GRUCell", None, True, True, True),
    ("GRUCell", None, False, True, False),
    ("GRUCell", None, True, False, False),
    ("GRUCell", None, False, False, True),
]


def case_id(case):
    name, nonlinearity, bias, batched, hx_given = case
    return "-".join([name, nonlinearity or "", "bias" if bias else "nobias",
                     "batched" if batched else "unbatched", "hx" if hx_given else "nohx"])


def build_pair(name, nonlinearity, bias, dtype, inputs, **extra):
    kwargs = {"bias": bias, "dtype": dtype}
    if nonlinearity:
        kwargs["nonlinearity"] = nonlinearity
    torch_cell = getattr(torch.nn, name)(INPUT, HIDDEN, **kwargs)
    draw_weights(torch_cell, inputs)
    return torch_cell, twin(torch_cell, getattr(seqkern.nn, name), INPUT, HIDDEN, **kwargs, **extra)


def check_case(case, dtype):
    inputs = Inputs()
    name, nonlinearity, bias, batched, hx_given = case
    torch_cell, cell = build_pair(name, nonlinearity, bias, dtype, inputs)
    data = cell_data(name == "LSTMCell", batched, hx_given, dtype, inputs, INPUT, HIDDEN)
    result = run_cell(cell, data)
    assert_cell_runs_close(result, run_cell(torch_cell, data), dtype)
    assert_cell_runs_close(result, reference_cell_run(cell, data), dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cell_float64_matches_torch_and_reference(case, backend):
    check_case(case, torch.float64)


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[9]], ids=case_id)
def test_cell_float32_matches_torch_and_reference(case, backend):
    check_case(case, torch.float32)


@pytest.mark.parametrize("input_size, hidden_size", [(1, HIDDEN), (INPUT, 1)])
@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_batches_of_one_feature_from_a_transpose_match_torch(name, input_size, hidden_size, backend):
    """A batch of scalars as ``values.unsqueeze(0).t()`` makes it: (B, 1) and contiguous, with a
    stride on the feature dimension that a copy would not have. The C++ kernels once read it
    as a column step in the step's products."""
    inputs = Inputs()
    torch_cell = draw_weights(getattr(torch.nn, name)(input_size, hidden_size, dtype=torch.float64), inputs)
    cell = twin(torch_cell, getattr(seqkern.nn, name), input_size, hidden_size)

    def column_batch(size):
        values = inputs.randn(BATCH, size)
        return values.reshape(-1).unsqueeze(0).t() if size == 1 else values

    x = column_batch(input_size)
    states = [column_batch(hidden_size) for _ in range(2)]
    assert x.is_contiguous() and x.stride() == ((1, BATCH) if input_size == 1 else (INPUT, 1))
    results = []
    for module in (torch_cell, cell):
        leaf = x.detach().requires_grad_()
        state = module(leaf, tuple(states) if name == "LSTMCell" else states[0])
        finals = state if isinstance(state, tuple) else (state,)
        loss = sum((final * torch.arange(final.numel(), dtype=final.dtype).view(final.shape)).sum()
                   for final in finals)
        results.append([*finals, *torch.autograd.grad(loss, [leaf, *module.parameters()])])
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_hidden_size_zero_cell(name):
    torch_cell = getattr(torch.nn, name)(INPUT, 0)
    cell = getattr(seqkern.nn, name)(INPUT, 0)
    x = Inputs().randn(BATCH, INPUT, dtype=torch.float32, requires_grad=True)
    result, expected = cell(x), torch_cell(x)
    result = result if isinstance(result, tuple) else (result,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert [r.shape for r in result] == [e.shape for e in expected] == [(BATCH, 0)] * len(result)
    sum(r.sum() for r in result).backward()
    assert x.grad is not None and not x.grad.any()


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_runs_a_sequence_like_the_layer(name, backend):
    """Stepping the cell over a sequence gives the single-layer module's output."""
    inputs = Inputs()
    cell = getattr(seqkern.nn, name)(INPUT, HIDDEN, dtype=torch.float64)
    layer = getattr(seqkern.nn, name[:-4])(INPUT, HIDDEN, dtype=torch.float64)
    layer.load_state_dict({f"{key}_l0": value for key, value in cell.state_dict().items()})
    x = inputs.randn(5, BATCH, INPUT)
    state = None
    for step in x:
        state = cell(step, state)
    expected = layer(x)[1]
    states = state if isinstance(state, tuple) else (state,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for actual, wanted in zip(states, expected):
        assert_close(actual, wanted[0])
