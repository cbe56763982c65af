"""Helpers for the tests/test_nn_*.py files: the backend fixture, module twins, and running a
seqkern module's computation through ``seqkern.reference``'s sequence-level functions."""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import seqkern
from seqkern import reference
from support import assert_close

BACKENDS = ("cpp", "reference")


def require_backend(name):
    if name == "cpp":
        try:
            import seqkern._C as extension
        except ImportError as error:
            pytest.skip(f"seqkern._C is not built: {error}")
        if not hasattr(extension, "recurrent_layer_forward"):
            pytest.skip("seqkern._C has no recurrent_layer_forward: the C++ recurrent backend is missing")


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Runs the test once per CPU backend of torch.ops.seqkern.recurrent_layer."""
    require_backend(request.param)
    monkeypatch.setenv("SEQKERN_BACKEND", request.param)
    return request.param


def twin(torch_module, seqkern_class, *args, **kwargs):
    """A seqkern module built with the same arguments and loaded with torch_module's weights."""
    parameter = next(torch_module.parameters())
    module = seqkern_class(*args, **{"device": parameter.device, "dtype": parameter.dtype, **kwargs})
    module.load_state_dict(torch_module.state_dict())
    module.train(torch_module.training)
    return module


def draw_weights(module, inputs):
    """Replace every parameter by draws from ``inputs`` in torch's init range U(±1/sqrt(H)):
    the magnitudes of a real model, which the float32 tolerances are set for."""
    bound = 1.0 / module.hidden_size ** 0.5
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(inputs.uniform(*parameter.shape, low=-bound, high=bound, dtype=parameter.dtype))
    return module


def reference_cell(module):
    """The recurrent op's cell name for a seqkern (or torch) module."""
    mode = getattr(module, "mode", None)
    if mode in ("RNN_TANH", "RNN_RELU"):
        return mode.lower()
    if isinstance(module, torch.nn.RNNCell):
        return "rnn_" + module.nonlinearity
    if isinstance(module, (torch.nn.LSTM, torch.nn.LSTMCell)):
        return "lstm_coupled" if getattr(module, "coupled_gates", False) else "lstm"
    return "gru" if getattr(module, "reset_after", True) else "gru_reset_before"


_KINDS = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh",
          "weight_hr": "w_hr", "weight_peep": "w_peep"}


def _kind(name):
    return _KINDS[name.split("_l")[0]] if "_l" in name else _KINDS[name]


def reference_weight_names(module):
    """Per layer-direction, the module's parameter names keyed by the reference's names."""
    if isinstance(module, torch.nn.RNNCellBase):
        return [{_kind(name): name for name, _ in module.named_parameters()}]
    return [{_kind(name): name for name in names} for names in module._all_weights]


def _array(tensor):
    return None if tensor is None else tensor.detach().double().numpy()


def _tensor(array):
    return None if array is None else torch.from_numpy(np.asarray(array))


def reference_run(module, input, hx, lengths, grad_output, grad_h_n, grad_c_n):
    """Forward and backward of ``module`` computed by seqkern.reference in float64.

    input (T, B, I) in the caller's batch order; hx (h0, c0 or None); lengths (B,) or None;
    gradients of output (T, B, D*Hout), h_n and c_n. Returns output, h_n, c_n, the input and
    state gradients and a dict of parameter gradients keyed by parameter name.
    """
    names = reference_weight_names(module)
    weights = [{kind: _array(getattr(module, name)) for kind, name in group.items()} for group in names]
    cell = reference_cell(module)
    num_layers = getattr(module, "num_layers", 1)
    bidirectional = getattr(module, "bidirectional", False)
    output, h_n, c_n, cache = reference.recurrent_sequence_forward(
        _array(input), (_array(hx[0]), _array(hx[1])), weights, cell, num_layers, bidirectional,
        None if lengths is None else lengths.numpy(),
    )
    grad_input, grad_h0, grad_c0, weight_grads = reference.recurrent_sequence_backward(
        _array(grad_output), _array(grad_h_n), _array(grad_c_n), cache
    )
    parameter_grads = {}
    for group, grads in zip(names, weight_grads):
        for kind, name in group.items():
            parameter_grads[name] = torch.from_numpy(np.asarray(grads[kind]))
    return dict(output=_tensor(output), h_n=_tensor(h_n), c_n=_tensor(c_n),
                grad_input=_tensor(grad_input), grad_h0=_tensor(grad_h0),
                grad_c0=_tensor(grad_c0), parameter_grads=parameter_grads)



INPUT_KINDS = ("padded", "packed_sorted", "packed_unsorted", "unbatched")


def sequence_data(inputs, kind, steps, batch, input_size, output_size, h_shape, c_shape, dtype,
                  hx_given):
    """Input, lengths, initial states and gradient seeds for one layer run, all time-major
    (T, B, ...) in the caller's batch order. h_shape / c_shape: (L*D, Hout) / (L*D, H), c_shape
    None without a cell state; output_size: D*Hout."""
    if kind == "unbatched":
        batch = 1
    lengths = None
    present = torch.ones(steps, batch, 1, dtype=dtype)
    if kind.startswith("packed"):
        lengths = inputs.lengths(batch, steps)
        if kind == "packed_sorted":
            lengths = lengths.sort(descending=True).values
        present = (torch.arange(steps).unsqueeze(1) < lengths).unsqueeze(2).to(dtype)
    states = [h_shape] if c_shape is None else [h_shape, c_shape]
    return dict(
        kind=kind, steps=steps, lengths=lengths,
        input=inputs.randn(steps, batch, input_size, dtype=dtype) * present,
        hx=[inputs.randn(rows, batch, size, dtype=dtype) for rows, size in states] if hx_given else None,
        grad_output=inputs.randn(steps, batch, output_size, dtype=dtype) * present,
        grad_states=[inputs.randn(rows, batch, size, dtype=dtype) for rows, size in states],
    )


def run_layer(module, data):
    """Run a (torch or seqkern) RNN/LSTM/GRU on ``data`` in the input form ``data["kind"]``
    and backpropagate the seeds. Returns time-major output, h_n, c_n (None for RNN/GRU), the
    gradients of input and given states in the time-major layout, and parameter gradients."""
    kind, batch_first = data["kind"], module.batch_first
    leaf = data["input"].transpose(0, 1) if batch_first else data["input"]
    leaf = (leaf.squeeze(0 if batch_first else 1) if kind == "unbatched" else leaf).clone().requires_grad_()
    states = [state.clone().requires_grad_() for state in data["hx"]] if data["hx"] is not None else []
    hx = [state.squeeze(1) for state in states] if kind == "unbatched" else states
    if kind.startswith("packed"):
        layer_input = pack_padded_sequence(leaf, data["lengths"], batch_first=batch_first,
                                           enforce_sorted=kind == "packed_sorted")
    else:
        layer_input = leaf
    hx_argument = None if not hx else (tuple(hx) if len(hx) == 2 else hx[0])
    output, hidden = module(layer_input, hx_argument)
    final_states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    if kind.startswith("packed"):
        assert isinstance(output, PackedSequence)
        assert torch.equal(output.batch_sizes, layer_input.batch_sizes)
        output = pad_packed_sequence(output, total_length=data["steps"])[0]
    elif kind == "unbatched":
        output = output.unsqueeze(1)
        final_states = [state.unsqueeze(1) for state in final_states]
    elif batch_first:
        output = output.transpose(0, 1)
    loss = (output * data["grad_output"]).sum()
    for state, seed in zip(final_states, data["grad_states"]):
        loss = loss + (state * seed).sum()
    names = [name for name, _ in module.named_parameters()]
    grads = torch.autograd.grad(loss, [leaf, *states, *module.parameters()])
    grad_input = grads[0]
    if kind == "unbatched":
        grad_input = grad_input.unsqueeze(0 if batch_first else 1)
    if batch_first:
        grad_input = grad_input.transpose(0, 1)
    state_grads = list(grads[1:1 + len(states)])
    return dict(
        output=output, h_n=final_states[0], c_n=final_states[1] if len(final_states) == 2 else None,
        grad_input=grad_input, grad_h0=state_grads[0] if state_grads else None,
        grad_c0=state_grads[1] if len(state_grads) == 2 else None,
        parameter_grads=dict(zip(names, grads[1 + len(states):])),
    )


def reference_layer_run(module, data):
    """seqkern.reference's result for the run that ``run_layer(module, data)`` does."""
    hx = data["hx"] if data["hx"] is not None else [None, None]
    if len(hx) == 1:
        hx = [hx[0], None]
    grad_states = data["grad_states"] + [None] * (2 - len(data["grad_states"]))
    result = reference_run(module, data["input"], hx, data["lengths"], data["grad_output"], *grad_states)
    if data["hx"] is None:
        result["grad_h0"] = result["grad_c0"] = None
    return result


def assert_runs_close(actual, expected, dtype):
    """Every entry of two run dicts equal within the tolerance table's entry for ``dtype``."""
    for key in ("output", "h_n", "c_n", "grad_input", "grad_h0", "grad_c0"):
        assert (actual[key] is None) == (expected[key] is None), key
        if actual[key] is not None:
            assert_close(actual[key], expected[key], dtype=dtype, msg=lambda text, key=key: f"{key}: {text}")
    assert actual["parameter_grads"].keys() == expected["parameter_grads"].keys()
    for name, grad in actual["parameter_grads"].items():
        assert_close(grad, expected["parameter_grads"][name], dtype=dtype,
                     msg=lambda text, name=name: f"grad of {name}: {text}")


CELL_BATCH = 3


def cell_data(is_lstm, batched, hx_given, dtype, inputs, input_size, hidden_size):
    """Input, states and gradient seeds for one cell step, batched (B, ...); an unbatched run
    uses row 0."""
    states = 2 if is_lstm else 1
    return dict(
        batched=batched,
        input=inputs.randn(CELL_BATCH, input_size, dtype=dtype),
        hx=[inputs.randn(CELL_BATCH, hidden_size, dtype=dtype) for _ in range(states)] if hx_given else None,
        seeds=[inputs.randn(CELL_BATCH, hidden_size, dtype=dtype) for _ in range(states)],
    )


def run_cell(cell, data):
    """Returns the new states and the gradients of input, given states and parameters, all
    batched (B, ...)."""
    batched = data["batched"]
    pick = (lambda t: t) if batched else (lambda t: t[0])
    x = pick(data["input"]).clone().requires_grad_()
    states = [pick(s).clone().requires_grad_() for s in data["hx"]] if data["hx"] is not None else []
    hx = None if not states else (tuple(states) if len(states) == 2 else states[0])
    result = cell(x, hx)
    new_states = list(result) if isinstance(result, tuple) else [result]
    assert all(s.dim() == (2 if batched else 1) for s in new_states)
    loss = sum((s * pick(seed)).sum() for s, seed in zip(new_states, data["seeds"]))
    grads = torch.autograd.grad(loss, [x, *states, *cell.parameters()])
    unpick = (lambda t: t) if batched else (lambda t: t.unsqueeze(0))
    return dict(states=[unpick(s) for s in new_states], grad_input=unpick(grads[0]),
                grad_states=[unpick(g) for g in grads[1:1 + len(states)]],
                parameter_grads=dict(zip([n for n, _ in cell.named_parameters()], grads[1 + len(states):])))


def reference_cell_run(cell, data):
    rows = slice(None) if data["batched"] else slice(0, 1)
    x = data["input"][rows].unsqueeze(0)
    hx = [s[rows].unsqueeze(0) for s in data["hx"]] if data["hx"] is not None else [None]
    seeds = [s[rows].unsqueeze(0) for s in data["seeds"]]
    hx += [None] * (2 - len(hx))
    grad_c = seeds[1] if len(seeds) == 2 else None
    result = reference_run(cell, x, hx, None, torch.zeros_like(seeds[0]), seeds[0], grad_c)
    states = [result["h_n"][0]] + ([result["c_n"][0]] if grad_c is not None else [])
    grad_states = []
    if data["hx"] is not None:
        grad_states = [result["grad_h0"][0]] + ([result["grad_c0"][0]] if grad_c is not None else [])
    return dict(states=states, grad_input=result["grad_input"][0], grad_states=grad_states,
                parameter_grads=result["parameter_grads"])


def assert_cell_runs_close(actual, expected, dtype):
    for key in ("states", "grad_states"):
        assert len(actual[key]) == len(expected[key])
        for a, e in zip(actual[key], expected[key]):
            assert_close(a, e, dtype=dtype)
    assert_close(actual["grad_input"], expected["grad_input"], dtype=dtype)
    assert actual["parameter_grads"].keys() == expected["parameter_grads"].keys()
    for name, grad in actual["parameter_grads"].items():
        assert_close(grad, expected["parameter_grads"][name], dtype=dtype)
