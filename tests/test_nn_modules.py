"""seqkern.nn modules are torch.nn modules: same parameters from the same seed, state_dict
both ways, repr, pickling (old pickles included), _flat_weights bookkeeping, extensions;
TorchScript: a clear error from torch.jit.script, and torch.jit.trace records the ops."""
import io
import math
import pickle
import re
import warnings

import pytest
import torch

import seqkern
from support import Inputs, assert_close

# (class name, args, kwargs)
CONFIGS = [
    ("RNN", (7, 13), {}),
    ("RNN", (7, 13, 2, "relu"), {"bias": False, "bidirectional": True}),
    ("LSTM", (7, 13), {}),
    ("LSTM", (7, 13, 3), {"proj_size": 5, "bidirectional": True, "batch_first": True, "dropout": 0.25}),
    ("LSTM", (7, 13, 2), {"bias": False, "proj_size": 4}),
    ("GRU", (7, 13, 2), {"bidirectional": True}),
    ("GRU", (7, 13), {"bias": False, "batch_first": True}),
    ("RNNCell", (7, 13), {}),
    ("RNNCell", (7, 13, False, "relu"), {}),
    ("LSTMCell", (7, 13), {"bias": False}),
    ("GRUCell", (7, 13), {}),
]


def config_id(config):
    name, args, kwargs = config
    return "-".join([name, *map(str, args), *(f"{k}={v}" for k, v in kwargs.items())])


def build_both(name, args, kwargs, seed=11):
    torch.manual_seed(seed)
    reference_module = getattr(torch.nn, name)(*args, **kwargs)
    torch.manual_seed(seed)
    return reference_module, getattr(seqkern.nn, name)(*args, **kwargs)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_same_seed_same_parameters_and_repr(config):
    torch_module, seqkern_module = build_both(*config)
    assert isinstance(seqkern_module, getattr(torch.nn, config[0]))
    expected = list(torch_module.named_parameters())
    actual = list(seqkern_module.named_parameters())
    assert [name for name, _ in actual] == [name for name, _ in expected]
    for (name, value), (_, wanted) in zip(actual, expected):
        assert torch.equal(value, wanted), name
    assert repr(seqkern_module) == repr(torch_module)
    assert seqkern_module.extra_repr() == torch_module.extra_repr()


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_state_dict_both_ways(config):
    torch_module, seqkern_module = build_both(*config)
    _, other_torch = build_both(*config, seed=12)
    seqkern_module.load_state_dict(other_torch.state_dict())
    torch_module.load_state_dict(seqkern_module.state_dict())
    assert list(seqkern_module.state_dict()) == list(other_torch.state_dict())
    for name, value in other_torch.state_dict().items():
        assert torch.equal(seqkern_module.state_dict()[name], value)
        assert torch.equal(torch_module.state_dict()[name], value)


@pytest.mark.parametrize("config", [c for c in CONFIGS if not c[0].endswith("Cell")], ids=config_id)
def test_stack_bookkeeping_matches_torch(config):
    torch_module, seqkern_module = build_both(*config)
    assert seqkern_module._flat_weights_names == torch_module._flat_weights_names
    assert seqkern_module._all_weights == torch_module._all_weights
    assert [w.shape for w in seqkern_module._flat_weights] == [w.shape for w in torch_module._flat_weights]
    assert seqkern_module.flatten_parameters() is None
    replacement = torch.nn.Parameter(torch.zeros_like(seqkern_module.weight_hh_l0))
    seqkern_module.weight_hh_l0 = replacement
    assert seqkern_module._flat_weights[1] is replacement
    seqkern_module.double()
    assert all(w.dtype == torch.float64 for w in seqkern_module._flat_weights)
    assert [len(group) for group in seqkern_module.all_weights] == [len(g) for g in torch_module.all_weights]


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_pickle_roundtrip(config):
    _, module = build_both(*config)
    restored = pickle.loads(pickle.dumps(module))
    assert type(restored) is type(module)
    assert repr(restored) == repr(module)
    for (name, value), (_, wanted) in zip(restored.state_dict().items(), module.state_dict().items()):
        assert torch.equal(value, wanted), name


def test_old_pickle_state_loads():
    """A pickle from before proj_size (and before seqkern's flags) existed, with the very old
    _all_weights that held parameters rather than names."""
    module = seqkern.nn.LSTM(3, 4, 2, bidirectional=True)
    state = module.__getstate__()
    for attribute in ("proj_size", "peephole", "coupled_gates"):
        state.pop(attribute, None)
    state["_all_weights"] = [[getattr(module, name) for name in names] for names in module._all_weights]
    restored = seqkern.nn.LSTM.__new__(seqkern.nn.LSTM)
    restored.__setstate__(state)
    assert restored.proj_size == 0
    assert restored.peephole is False and restored.coupled_gates is False
    assert restored._all_weights == module._all_weights
    assert restored._flat_weights_names == module._flat_weights_names
    assert [w is v for w, v in zip(restored._flat_weights, module._flat_weights)] == [True] * 16
    assert repr(restored) == repr(module)
    gru_state = seqkern.nn.GRU(3, 4).__getstate__()
    gru_state.pop("reset_after")
    restored_gru = seqkern.nn.GRU.__new__(seqkern.nn.GRU)
    restored_gru.__setstate__(gru_state)
    assert restored_gru.reset_after is True


EXTENDED = [
    ({"peephole": True}, 4, 3),
    ({"coupled_gates": True}, 3, None),
    ({"peephole": True, "coupled_gates": True}, 3, 2),
]


@pytest.mark.parametrize("flags, gates, peep_rows", EXTENDED, ids=lambda v: str(v))
@pytest.mark.parametrize("proj_size", [0, 3])
def test_extended_lstm_parameter_layout(flags, gates, peep_rows, proj_size):
    hidden, input_size = 5, 7
    module = seqkern.nn.LSTM(input_size, hidden, 2, bidirectional=True, proj_size=proj_size, **flags)
    out_size = proj_size or hidden
    expected = []
    for layer in range(2):
        for suffix in ("", "_reverse"):
            layer_input = input_size if layer == 0 else 2 * out_size
            expected += [(f"weight_ih_l{layer}{suffix}", (gates * hidden, layer_input)),
                         (f"weight_hh_l{layer}{suffix}", (gates * hidden, out_size)),
                         (f"bias_ih_l{layer}{suffix}", (gates * hidden,)),
                         (f"bias_hh_l{layer}{suffix}", (gates * hidden,))]
            if proj_size:
                expected.append((f"weight_hr_l{layer}{suffix}", (proj_size, hidden)))
            if peep_rows:
                expected.append((f"weight_peep_l{layer}{suffix}", (peep_rows, hidden)))
    assert [(name, tuple(p.shape)) for name, p in module.named_parameters()] == expected
    assert module._flat_weights_names == [name for name, _ in expected]
    bound = 1 / math.sqrt(hidden)
    values = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert values.abs().max() <= bound and values.std() > bound / 3
    flag_text = "".join(f", {k}=True" for k in flags)
    proj_text = f", proj_size={proj_size}" if proj_size else ""
    assert repr(module) == f"LSTM(7, 5{proj_text}, num_layers=2, bidirectional=True{flag_text})"
    torch.manual_seed(3)
    first = seqkern.nn.LSTM(input_size, hidden, **flags).state_dict()
    torch.manual_seed(3)
    second = seqkern.nn.LSTM(input_size, hidden, **flags).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    restored = pickle.loads(pickle.dumps(module))
    assert repr(restored) == repr(module)


@pytest.mark.parametrize("flags, gates, peep_rows", EXTENDED, ids=lambda v: str(v))
def test_extended_lstm_cell_parameter_layout(flags, gates, peep_rows):
    cell = seqkern.nn.LSTMCell(7, 5, **flags)
    expected = [("weight_ih", (gates * 5, 7)), ("weight_hh", (gates * 5, 5)), ("bias_ih", (gates * 5,)),
                ("bias_hh", (gates * 5,))]
    if peep_rows:
        expected.append(("weight_peep", (peep_rows, 5)))
    assert [(name, tuple(p.shape)) for name, p in cell.named_parameters()] == expected
    assert repr(cell) == "LSTMCell(7, 5" + "".join(f", {k}=True" for k in flags) + ")"
    values = torch.cat([p.detach().flatten() for p in cell.parameters()])
    assert values.abs().max() <= 1 / math.sqrt(5)


def test_peephole_cell_keeps_torch_weights_for_the_torch_parameters():
    torch.manual_seed(9)
    torch_cell = torch.nn.LSTMCell(7, 5)
    torch.manual_seed(9)
    cell = seqkern.nn.LSTMCell(7, 5, peephole=True)
    for name, value in torch_cell.named_parameters():
        assert torch.equal(getattr(cell, name), value)


def test_gru_reset_before_flag_changes_no_parameter():
    torch.manual_seed(2)
    torch_module = torch.nn.GRU(7, 5, 2)
    torch.manual_seed(2)
    module = seqkern.nn.GRU(7, 5, 2, reset_after=False)
    assert list(module.state_dict()) == list(torch_module.state_dict())
    assert repr(module) == "GRU(7, 5, num_layers=2, reset_after=False)"
    assert repr(seqkern.nn.GRUCell(7, 5, reset_after=False)) == "GRUCell(7, 5, reset_after=False)"


POOL_CONFIGS = [("MaxPool1d", (3, 2, 1), {}), ("MaxPool2d", (2,), {"ceil_mode": True}),
                ("MaxPool3d", ((1, 2, 2),), {"dilation": (1, 2, 1)})]


def scripting_model(module):
    """A user's model holding the module, as torch.jit.script meets it: through its parent."""
    return torch.nn.Sequential(torch.nn.Identity(), module)


@pytest.mark.parametrize("config", CONFIGS + POOL_CONFIGS, ids=config_id)
def test_torch_jit_script_is_a_clear_error(config):
    """torch.jit.script cannot compile a seqkern forward (Python around torch.library ops);
    it says so, naming the module and what to use, instead of failing to parse it."""
    name, args, kwargs = config
    module = getattr(seqkern.nn, name)(*args, **kwargs)
    message = f"seqkern.nn.{name} cannot be compiled by TorchScript (torch.jit.script)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for target in (module, scripting_model(module)):
            with pytest.raises(RuntimeError, match=re.escape(message)) as caught:
                torch.jit.script(target)
            assert "torch.compile" in str(caught.value) and "torch.jit.trace" in str(caught.value)


def example_input(name, args, kwargs, batch, steps, inputs):
    input_size = args[0]
    if name.endswith("Cell"):
        return inputs.randn(batch, input_size)
    if kwargs.get("batch_first"):
        return inputs.randn(batch, steps, input_size)
    return inputs.randn(steps, batch, input_size)


def flat_outputs(output):
    if isinstance(output, torch.Tensor):
        return [output]
    return [tensor for item in output for tensor in flat_outputs(item)]


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_traced_module_runs_seqkern_ops_at_other_shapes(config):
    """torch.jit.trace records the seqkern ops; the saved and reloaded trace runs at a batch and
    length it was not traced at, with torch.nn's results (float64, inference)."""
    name, args, kwargs = config
    torch_module, seqkern_module = build_both(*config)
    torch_module, seqkern_module = torch_module.double().eval(), seqkern_module.double().eval()
    inputs = Inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(seqkern_module, (example_input(name, args, kwargs, 3, 4, inputs),))
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    graph = str(traced.inlined_graph)
    assert ("seqkern::recurrent_cell" if name.endswith("Cell") else "seqkern::recurrent_layer") in graph
    x = example_input(name, args, kwargs, 5, 7, inputs)
    expected = flat_outputs(torch_module(x))
    actual = flat_outputs(loaded(x))
    assert [tensor.shape for tensor in actual] == [tensor.shape for tensor in expected]
    for tensor, wanted in zip(actual, expected):
        assert_close(tensor, wanted)


@pytest.mark.parametrize("config", POOL_CONFIGS, ids=config_id)
def test_traced_pool_runs_seqkern_ops_at_other_shapes(config):
    name, args, kwargs = config
    torch_module = getattr(torch.nn, name)(*args, **kwargs)
    seqkern_module = getattr(seqkern.nn, name)(*args, **kwargs)
    dims = int(name[-2])
    inputs = Inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(seqkern_module, (inputs.randn(2, 3, *[6] * dims),))
    assert "seqkern::max_pool" in str(traced.inlined_graph)
    x = inputs.randn(3, 2, *[9 + axis for axis in range(dims)])
    assert torch.equal(traced(x), torch_module(x))
