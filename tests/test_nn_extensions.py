"""The seed extensions (peephole and coupled-gate LSTM, reset-before GRU) as layers and cells,
against seqkern.reference, values and gradients, on each CPU backend; and the functional
forms against the modules."""
import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import seqkern
from nn_support import (assert_cell_runs_close, assert_runs_close, backend, cell_data, draw_weights,  # noqa: F401
                        reference_cell_run, reference_layer_run, run_cell, run_layer, sequence_data)
from support import Inputs, assert_close

STEPS, BATCH, INPUT, HIDDEN, PROJ = 5, 3, 7, 13, 5

# (class, flags, num_layers, bidirectional, proj_size, bias, batch_first, input kind, hx given)
LAYER_CASES = [
    ("LSTM", {"peephole": True}, 2, True, 0, True, False, "packed_unsorted", True),
    ("LSTM", {"peephole": True}, 1, False, PROJ, False, True, "padded", False),
    ("LSTM", {"coupled_gates": True}, 2, False, 0, True, True, "packed_sorted", False),
    ("LSTM", {"coupled_gates": True}, 1, True, PROJ, True, False, "unbatched", True),
    ("LSTM", {"peephole": True, "coupled_gates": True}, 3, True, PROJ, True, False, "padded", True),
    ("LSTM", {"peephole": True, "coupled_gates": True}, 1, False, 0, False, False, "packed_unsorted", False),
    ("GRU", {"reset_after": False}, 2, True, 0, True, True, "packed_unsorted", True),
    ("GRU", {"reset_after": False}, 1, False, 0, False, False, "unbatched", False),
]


def layer_case_id(case):
    name, flags, layers, bidirectional, proj, bias, batch_first, kind, hx_given = case
    return "-".join([name, *flags, f"L{layers}", "bi" if bidirectional else "uni", f"P{proj}",
                     "bias" if bias else "nobias", "bf" if batch_first else "tf", kind,
                     "hx" if hx_given else "nohx"])


def build_extended(name, flags, layers, bidirectional, proj, bias, batch_first, dtype, inputs):
    kwargs = dict(bias=bias, batch_first=batch_first, bidirectional=bidirectional, dtype=dtype, **flags)
    if proj:
        kwargs["proj_size"] = proj
    module = getattr(seqkern.nn, name)(INPUT, HIDDEN, layers, **kwargs)
    return draw_weights(module, inputs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", LAYER_CASES, ids=layer_case_id)
def test_extended_layer_matches_reference(case, dtype, backend):
    inputs = Inputs()
    name, flags, layers, bidirectional, proj, bias, batch_first, kind, hx_given = case
    module = build_extended(name, flags, layers, bidirectional, proj, bias, batch_first, dtype, inputs)
    directions = 2 if bidirectional else 1
    out_size = proj or HIDDEN
    c_shape = (layers * directions, HIDDEN) if name == "LSTM" else None
    data = sequence_data(inputs, kind, STEPS, BATCH, INPUT, directions * out_size,
                         (layers * directions, out_size), c_shape, dtype, hx_given)
    assert_runs_close(run_layer(module, data), reference_layer_run(module, data), dtype)


CELL_CASES = [
    ("LSTMCell", {"peephole": True}, True, True, True),
    ("LSTMCell", {"coupled_gates": True}, False, True, False),
    ("LSTMCell", {"peephole": True, "coupled_gates": True}, True, False, True),
    ("GRUCell", {"reset_after": False}, True, True, True),
    ("GRUCell", {"reset_after": False}, False, False, False),
]


@pytest.mark.parametrize("case", CELL_CASES, ids=lambda c: "-".join([c[0], *c[1], str(c[2:])]))
def test_extended_cell_matches_reference(case, backend):
    inputs = Inputs()
    name, flags, bias, batched, hx_given = case
    cell = getattr(seqkern.nn, name)(INPUT, HIDDEN, bias, dtype=torch.float64, **flags)
    draw_weights(cell, inputs)
    data = cell_data(name == "LSTMCell", batched, hx_given, torch.float64, inputs, INPUT, HIDDEN)
    assert_cell_runs_close(run_cell(cell, data), reference_cell_run(cell, data), torch.float64)


def test_extensions_change_the_result(backend):
    """Each flag selects other math: the same weights give other outputs."""
    inputs = Inputs()
    x = inputs.randn(STEPS, BATCH, INPUT)
    plain = seqkern.nn.LSTM(INPUT, HIDDEN, dtype=torch.float64)
    peephole = seqkern.nn.LSTM(INPUT, HIDDEN, dtype=torch.float64, peephole=True)
    peephole.load_state_dict({**plain.state_dict(), "weight_peep_l0": inputs.uniform(3, HIDDEN)})
    assert not torch.allclose(peephole(x)[0], plain(x)[0])
    gru = seqkern.nn.GRU(INPUT, HIDDEN, dtype=torch.float64)
    reset_before = seqkern.nn.GRU(INPUT, HIDDEN, dtype=torch.float64, reset_after=False)
    reset_before.load_state_dict(gru.state_dict())
    assert not torch.allclose(reset_before(x)[0], gru(x)[0])


def test_functional_forms_match_the_modules(backend):
    inputs = Inputs()
    x = inputs.randn(STEPS, BATCH, INPUT)
    packed = pack_sequence([inputs.randn(n, INPUT) for n in (2, 5, 3)], enforce_sorted=False)
    lstm = seqkern.nn.LSTM(INPUT, HIDDEN, 2, proj_size=PROJ, bidirectional=True, dtype=torch.float64,
                           peephole=True)
    expected_output, (expected_h, expected_c) = lstm(packed)
    output, (h_n, c_n) = seqkern.functional.lstm(packed, None, lstm._flat_weights, True, 2, 0.0, False, True,
                                                 False, peephole=True)
    assert_close(output.data, expected_output.data)
    assert torch.equal(output.unsorted_indices, expected_output.unsorted_indices)
    assert_close(h_n, expected_h)
    assert_close(c_n, expected_c)
    gru = seqkern.nn.GRU(INPUT, HIDDEN, batch_first=True, dtype=torch.float64, reset_after=False)
    hx = inputs.randn(1, STEPS, HIDDEN)
    output, h_n = seqkern.functional.gru(x, hx, gru._flat_weights, batch_first=True, reset_after=False)
    assert_close(output, gru(x, hx)[0])
    rnn = seqkern.nn.RNN(INPUT, HIDDEN, nonlinearity="relu", bias=False, dtype=torch.float64)
    output, h_n = seqkern.functional.rnn(x, None, rnn._flat_weights, False, nonlinearity="relu")
    assert_close(output, rnn(x)[0])
    cell = seqkern.nn.LSTMCell(INPUT, HIDDEN, dtype=torch.float64, peephole=True, coupled_gates=True)
    h, c = seqkern.functional.lstm_cell(x[0], None, cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                        cell.bias_hh, w_peep=cell.weight_peep, coupled_gates=True)
    expected_h, expected_c = cell(x[0])
    assert_close(h, expected_h)
    assert_close(c, expected_c)
    gru_cell = seqkern.nn.GRUCell(INPUT, HIDDEN, dtype=torch.float64)
    assert_close(seqkern.functional.gru_cell(x[0], None, *gru_cell.parameters()), gru_cell(x[0]))
    rnn_cell = seqkern.nn.RNNCell(INPUT, HIDDEN, nonlinearity="relu", dtype=torch.float64)
    assert_close(seqkern.functional.rnn_cell(x[0], None, *rnn_cell.parameters(), nonlinearity="relu"),
                 rnn_cell(x[0]))
