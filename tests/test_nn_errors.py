"""Bad arguments raise what torch.nn raises: each case builds the torch.nn module and the
seqkern.nn module with the same arguments, calls both the same way, and compares the
exception type and message (and, for construction, warnings)."""
import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence

import seqkern

# torch's LSTM with proj_size says once that oneDNN cannot run it; that is torch's business.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

f32, f64 = torch.float32, torch.float64


def zeros(*shape, dtype=f32):
    return torch.zeros(*shape, dtype=dtype)


def packed(*shape, lengths, dtype=f32, enforce_sorted=True):
    return pack_padded_sequence(zeros(*shape, dtype=dtype), lengths, enforce_sorted=enforce_sorted)


# (id, class name, constructor args, constructor kwargs, forward args)
FORWARD_CASES = [
    ("lstm-4d-input", "LSTM", (3, 5, 2), {}, (zeros(2, 4, 3, 1),)),
    ("gru-4d-input", "GRU", (3, 5), {}, (zeros(2, 4, 3, 1),)),
    ("rnn-4d-input", "RNN", (3, 5), {}, (zeros(2, 4, 3, 1),)),
    ("rnn-1d-input", "RNN", (3, 5), {}, (zeros(3),)),
    ("lstm-4d-input-before-hx", "LSTM", (3, 5), {}, (zeros(2, 4, 3, 1), (zeros(2, 5), zeros(2, 5)))),
    ("rnn-input-dtype", "RNN", (3, 5), {}, (zeros(2, 4, 7, dtype=f64),)),
    ("lstm-input-dtype", "LSTM", (3, 5, 2), {}, (zeros(2, 4, 3, dtype=f64),)),
    ("gru-input-bf16", "GRU", (3, 5), {}, (zeros(2, 4, 3, dtype=torch.bfloat16),)),
    ("lstm-input-int", "LSTM", (3, 5), {}, (zeros(2, 4, 3, dtype=torch.int64),)),
    ("rnn-input-size", "RNN", (3, 5), {}, (zeros(2, 4, 7),)),
    ("lstm-input-size-unbatched", "LSTM", (3, 5), {}, (zeros(2, 7),)),
    ("rnn-hidden-size", "RNN", (3, 5, 2), {}, (zeros(2, 4, 3), zeros(2, 7, 5))),
    ("gru-hidden-layers", "GRU", (3, 5, 2), {"bidirectional": True}, (zeros(2, 4, 3), zeros(2, 4, 5))),
    ("rnn-batch-first-hidden", "RNN", (3, 5), {"batch_first": True}, (zeros(4, 2, 3), zeros(4, 1, 5))),
    ("lstm-hidden0-size", "LSTM", (3, 5, 2), {}, (zeros(2, 4, 3), (zeros(2, 7, 5), zeros(2, 4, 5)))),
    ("lstm-hidden1-size", "LSTM", (3, 5, 2), {}, (zeros(2, 4, 3), (zeros(2, 4, 5), zeros(2, 7, 5)))),
    ("lstm-proj-hidden0", "LSTM", (3, 5, 2), {"proj_size": 2}, (zeros(2, 4, 3), (zeros(2, 4, 5), zeros(2, 4, 5)))),
    ("rnn-batched-2d-hx", "RNN", (3, 5), {}, (zeros(2, 4, 3), zeros(1, 5))),
    ("gru-unbatched-3d-hx", "GRU", (3, 5), {}, (zeros(2, 3), zeros(1, 1, 5))),
    ("rnn-dims-before-dtype", "RNN", (3, 5), {}, (zeros(2, 4, 3, dtype=f64), zeros(2, 3))),
    ("lstm-batched-2d-hx", "LSTM", (3, 5), {}, (zeros(2, 4, 3), (zeros(1, 5), zeros(1, 5)))),
    ("lstm-unbatched-3d-hx", "LSTM", (3, 5), {}, (zeros(2, 3), (zeros(1, 1, 5), zeros(1, 1, 5)))),
    ("lstm-hx-one-tensor", "LSTM", (3, 5), {}, (zeros(2, 4, 3), (zeros(1, 4, 5),))),
    ("lstm-hx-three-tensors", "LSTM", (3, 5), {}, (zeros(2, 4, 3), (zeros(1, 4, 5),) * 3)),
    ("lstm-empty-sequence", "LSTM", (3, 5, 2), {}, (zeros(0, 4, 3),)),
    ("rnn-empty-unbatched-sequence", "RNN", (3, 5), {}, (zeros(0, 3),)),
    ("gru-empty-batch-first-sequence", "GRU", (3, 5), {"batch_first": True}, (zeros(2, 0, 3),)),
    ("rnn-hx-dtype", "RNN", (3, 5), {}, (zeros(2, 4, 3), zeros(1, 4, 5, dtype=f64))),
    ("gru-hx-dtype", "GRU", (3, 5, 2), {}, (zeros(2, 4, 3), zeros(2, 4, 5, dtype=f64))),
    ("rnn-hx-int", "RNN", (3, 5), {}, (zeros(2, 4, 3), zeros(1, 4, 5, dtype=torch.int64))),
    ("lstm-f64-hx-f32", "LSTM", (3, 5, 2), {"dtype": f64},
     (zeros(2, 4, 3, dtype=f64), (zeros(2, 4, 5), zeros(2, 4, 5, dtype=f64)))),
    ("lstm-proj-hx-dtype", "LSTM", (3, 5, 2), {"proj_size": 2},
     (zeros(2, 4, 3), (zeros(2, 4, 2, dtype=f64), zeros(2, 4, 5)))),
    ("gru-packed-hidden", "GRU", (3, 5, 2), {}, (packed(3, 2, 3, lengths=[3, 2]), zeros(2, 3, 5))),
    ("gru-packed-2d-hidden", "GRU", (3, 5, 2), {}, (packed(3, 2, 3, lengths=[3, 2]), zeros(2, 5))),
    ("rnn-packed-dtype", "RNN", (3, 5), {}, (packed(3, 2, 3, lengths=[3, 2], dtype=f64),)),
    ("rnn-packed-input-size", "RNN", (3, 5), {}, (packed(3, 2, 4, lengths=[3, 2]),)),
    ("lstm-packed-dtype", "LSTM", (3, 5), {}, (packed(3, 2, 3, lengths=[3, 2], dtype=f64),)),
    ("lstmcell-input-size", "LSTMCell", (10, 20), {}, (zeros(3, 11),)),
    ("grucell-input-size", "GRUCell", (10, 20), {}, (zeros(3, 11),)),
    ("rnncell-input-size-0", "RNNCell", (10, 20), {}, (zeros(3, 0),)),
    ("lstmcell-hidden0-size", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(3, 21), zeros(3, 20)))),
    ("lstmcell-hidden1-size", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(3, 20), zeros(3, 21)))),
    ("rnncell-hidden-size", "RNNCell", (10, 20), {}, (zeros(3, 10), zeros(3, 21))),
    ("grucell-hidden-size", "GRUCell", (10, 20), {}, (zeros(3, 10), zeros(3, 21))),
    ("lstmcell-batch", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(5, 20), zeros(5, 20)))),
    ("lstmcell-batch-1-no-broadcast", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(1, 20), zeros(1, 20)))),
    ("lstmcell-hidden1-batch", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(3, 20), zeros(5, 20)))),
    ("rnncell-batch", "RNNCell", (10, 20), {}, (zeros(3, 10), zeros(5, 20))),
    ("grucell-batch-1-no-broadcast", "GRUCell", (10, 20), {}, (zeros(3, 10), zeros(1, 20))),
    ("lstmcell-unbatched-2d-hx", "LSTMCell", (10, 20), {}, (zeros(10), (zeros(1, 20), zeros(1, 20)))),
    ("lstmcell-batched-1d-hx", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(20), zeros(20)))),
    ("rnncell-batched-1d-hx-as-long-as-the-batch", "RNNCell", (10, 20), {}, (zeros(20, 10), zeros(20))),
    ("lstmcell-batched-1d-hx-as-long-as-the-batch", "LSTMCell", (10, 20), {},
     (zeros(20, 10), (zeros(20), zeros(20)))),
    ("lstmcell-hx-one-tensor", "LSTMCell", (10, 20), {}, (zeros(3, 10), zeros(3, 20))),
    ("lstmcell-hx-stacked-tensor", "LSTMCell", (10, 20), {}, (zeros(3, 10), zeros(2, 3, 20))),
    ("rnncell-3d-input", "RNNCell", (10, 20), {}, (zeros(3, 10, 1),)),
    ("grucell-0d-input", "GRUCell", (10, 20), {}, (torch.tensor(1.0),)),
    ("lstmcell-3d-input", "LSTMCell", (10, 20), {}, (zeros(3, 10, 1),)),
    ("rnncell-4d-hidden", "RNNCell", (10, 20), {}, (zeros(3, 10), zeros(3, 20, 1, 1))),
    ("grucell-4d-hidden", "GRUCell", (10, 20), {}, (zeros(3, 10), zeros(3, 20, 1, 1))),
    ("lstmcell-4d-hx0", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(3, 20, 1, 1), zeros(3, 20)))),
    ("lstmcell-4d-hx1", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(3, 20), zeros(3, 20, 1, 1)))),
    ("lstmcell-one-state", "LSTMCell", (10, 20), {}, (zeros(3, 10), (zeros(3, 20),))),
    ("rnncell-bad-nonlinearity", "RNNCell", (10, 20), {"nonlinearity": "garbage"}, (zeros(3, 10),)),
    ("lstmcell-input-dtype", "LSTMCell", (10, 20), {}, (zeros(3, 10, dtype=f64),)),
    ("grucell-input-int", "GRUCell", (10, 20), {}, (zeros(3, 10, dtype=torch.int64),)),
    ("rnncell-hidden-dtype", "RNNCell", (10, 20), {}, (zeros(3, 10), zeros(3, 20, dtype=f64))),
    ("rnncell-no-bias-input-dtype", "RNNCell", (10, 20), {"bias": False}, (zeros(3, 10, dtype=f64),)),
    ("grucell-no-bias-hidden-dtype", "GRUCell", (10, 20), {"bias": False}, (zeros(3, 10), zeros(3, 20, dtype=f64))),
    ("lstmcell-no-bias-input-int", "LSTMCell", (10, 20), {"bias": False}, (zeros(3, 10, dtype=torch.int64),)),
    ("lstmcell-no-bias-input-bf16", "LSTMCell", (10, 20), {"bias": False}, (zeros(3, 10, dtype=torch.bfloat16),)),
    ("rnn-no-bias-hx-dtype", "RNN", (3, 5), {"bias": False}, (zeros(2, 4, 3), zeros(1, 4, 5, dtype=f64))),
    ("gru-no-bias-hx-half", "GRU", (3, 5), {"bias": False}, (zeros(2, 4, 3), zeros(1, 4, 5, dtype=torch.float16))),
    ("lstm-no-bias-packed-dtype", "LSTM", (3, 5), {"bias": False}, (packed(3, 2, 3, lengths=[3, 2], dtype=f64),)),
    ("lstmcell-f64-hidden-f32", "LSTMCell", (10, 20), {"dtype": f64},
     (zeros(3, 10, dtype=f64), (zeros(3, 20), zeros(3, 20, dtype=f64)))),
]


def raised(call):
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("name, args, kwargs, call_args",
                         [case[1:] for case in FORWARD_CASES], ids=[case[0] for case in FORWARD_CASES])
def test_forward_error_matches_torch(name, args, kwargs, call_args):
    expected = raised(lambda: getattr(torch.nn, name)(*args, **kwargs)(*call_args))
    assert raised(lambda: getattr(seqkern.nn, name)(*args, **kwargs)(*call_args)) == expected


LSTM_CELL_STATES = {
    "tensor": zeros(3, 20), "none-state": (zeros(3, 20), None), "int-state": [zeros(3, 20), 1],
    "array-state": (zeros(3, 20), zeros(3, 20).numpy()), "string": "hc", "three-states": (zeros(3, 20),) * 3,
}


@pytest.mark.parametrize("hx", LSTM_CELL_STATES.values(), ids=LSTM_CELL_STATES.keys())
def test_lstm_cell_states_are_parsed_as_torch_parses_them(hx):
    """seqkern.functional.lstm_cell against torch.lstm_cell (what LSTMCell calls): the state
    pair is a tuple or list of tensors, checked with the messages of torch's argument parser."""
    x, w_ih, w_hh = zeros(3, 10), zeros(80, 10), zeros(80, 20)
    expected = raised(lambda: torch.lstm_cell(x, hx, w_ih, w_hh))
    assert raised(lambda: seqkern.functional.lstm_cell(x, hx, w_ih, w_hh)) == expected


# (id, class name, constructor args, constructor kwargs)
CONSTRUCTION_CASES = [
    ("rnn-nonlinearity-keyword", "RNN", (3, 4), {"nonlinearity": "garbage"}),
    ("rnn-nonlinearity-positional", "RNN", (3, 4, 1, "garbage"), {}),
    ("gru-proj-size", "GRU", (3, 4), {"proj_size": 1}),
    ("rnn-proj-size", "RNN", (3, 4), {"proj_size": 1}),
    ("lstm-proj-not-smaller", "LSTM", (3, 4), {"proj_size": 4}),
    ("lstm-proj-negative", "LSTM", (3, 4), {"proj_size": -1}),
    ("hidden-size-zero", "LSTM", (3, 0), {}),
    ("num-layers-zero", "GRU", (3, 4, 0), {}),
    ("input-size-zero", "RNN", (0, 4), {}),
    ("bias-int", "LSTM", (3, 4), {"bias": 1}),
    ("batch-first-str", "GRU", (3, 4), {"batch_first": "yes"}),
    ("input-size-float", "LSTM", (3.0, 4), {}),
    ("hidden-size-float", "RNN", (3, 4.0), {}),
    ("dropout-bool", "LSTM", (3, 4, 2), {"dropout": True}),
    ("dropout-above-one", "GRU", (3, 4, 2), {"dropout": 2}),
    ("dropout-negative", "RNN", (3, 4, 2), {"dropout": -0.1}),
    ("dropout-string", "LSTM", (3, 4, 2), {"dropout": "a"}),
    ("cell-negative-hidden", "LSTMCell", (10, -1), {}),
]


@pytest.mark.parametrize("name, args, kwargs", [case[1:] for case in CONSTRUCTION_CASES],
                         ids=[case[0] for case in CONSTRUCTION_CASES])
def test_construction_error_matches_torch(name, args, kwargs):
    expected = raised(lambda: getattr(torch.nn, name)(*args, **kwargs))
    assert raised(lambda: getattr(seqkern.nn, name)(*args, **kwargs)) == expected


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_single_layer_dropout_warns_like_torch(name):
    messages = []
    for module in (torch.nn, seqkern.nn):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            getattr(module, name)(3, 4, dropout=0.5)
        messages.append([(w.category, str(w.message)) for w in caught])
    assert messages[1] == messages[0]
    assert messages[0] and "non-zero dropout expects num_layers greater than 1" in messages[0][0][1]


@pytest.mark.parametrize("flag, module", [("peephole", "LSTM"), ("coupled_gates", "LSTMCell"),
                                          ("reset_after", "GRU"), ("reset_after", "GRUCell")])
def test_extension_flags_must_be_bool(flag, module):
    with pytest.raises(TypeError, match=f"^{flag} should be of type bool, got: int$"):
        getattr(seqkern.nn, module)(3, 4, **{flag: 1})


# Where torch fails by accident (deep inside a kernel, with a message about matmul shapes or
# oneDNN, or not at all), seqkern raises the exception type torch raises where it can, with
# a message that says what is wrong.
def test_packed_lstm_checks_what_torch_leaves_to_its_kernels():
    module = seqkern.nn.LSTM(3, 5, 2)
    with pytest.raises(RuntimeError, match=r"^input.size\(-1\) must be equal to input_size. Expected 3, got 4$"):
        module(packed(3, 2, 4, lengths=[3, 2]))
    with pytest.raises(RuntimeError, match=r"^Expected hidden\[0\] size \(2, 2, 5\), got \[2, 3, 5\]$"):
        module(packed(3, 2, 3, lengths=[3, 2]), (zeros(2, 3, 5), zeros(2, 3, 5)))
    with pytest.raises(RuntimeError, match=r"^Expected hidden\[1\] size \(2, 2, 5\), got \[2, 5\]$"):
        module(packed(3, 2, 3, lengths=[3, 2]), (zeros(2, 2, 5), zeros(2, 5)))


@pytest.mark.parametrize("packed_input", [False, True], ids=["padded", "packed"])
def test_lstm_states_stacked_in_one_tensor_are_a_type_error(packed_input):
    # torch's argument parser lists every overload of lstm() there: the same TypeError, and
    # a message that says what is wrong.
    x = packed(3, 2, 3, lengths=[3, 2]) if packed_input else zeros(3, 2, 3)
    stacked = torch.stack([zeros(1, 2, 5)] * 2)
    with pytest.raises(TypeError, match=r"lstm\(\) received an invalid combination of arguments"):
        torch.nn.LSTM(3, 5)(x, stacked)
    with pytest.raises(TypeError, match=r"^lstm\(\): argument 'hx' must be a tuple of two Tensors \(h_0, c_0\), "
                                        r"not Tensor$"):
        seqkern.nn.LSTM(3, 5)(x, stacked)


def test_functional_lstm_names_what_its_states_are():
    with pytest.raises(TypeError, match=r"not tuple of \[Tensor, NoneType\]$"):
        seqkern.functional.lstm(zeros(3, 2, 3), (zeros(1, 2, 5), None), list(seqkern.nn.LSTM(3, 5).parameters()))


def test_too_large_hx_for_unsorted_packed_input_is_an_error():
    # torch.nn reorders hx by sorted_indices before checking it, which silently drops
    # surplus batch entries; seqkern checks first.
    sequences = pack_sequence([zeros(3, 3), zeros(5, 3), zeros(1, 3)], enforce_sorted=False)
    with pytest.raises(RuntimeError, match=r"^Expected hidden size \(2, 3, 5\), got \[2, 4, 5\]$"):
        seqkern.nn.GRU(3, 5, 2)(sequences, zeros(2, 4, 5))


def test_float32_lstm_hidden_dtype_mismatch_names_the_dtypes():
    # torch's float32 LSTM goes through oneDNN here and says "get_mkldnn_dtype: unsupported
    # data type"; seqkern says what its other paths say.
    with pytest.raises(RuntimeError, match="^mat1 and mat2 must have the same dtype, but got Double and Float$"):
        seqkern.nn.LSTM(3, 5)(zeros(2, 4, 3), (zeros(1, 4, 5, dtype=f64), zeros(1, 4, 5)))


@pytest.mark.parametrize("cell", [False, True])
def test_cell_state_dtype_mismatch_is_an_error(cell):
    # torch promotes c to the wider dtype here; seqkern computes in one dtype only.
    module = (seqkern.nn.LSTMCell(10, 20) if cell else seqkern.nn.LSTM(10, 20)).double()
    x = zeros(3, 10, dtype=f64) if cell else zeros(2, 3, 10, dtype=f64)
    h, c = (zeros(3, 20, dtype=f64), zeros(3, 20)) if cell else (zeros(1, 3, 20, dtype=f64), zeros(1, 3, 20))
    with pytest.raises(RuntimeError, match=r"^LSTM cell state dtype \(torch.float32\) does not match input dtype"):
        module(x, (h, c))
