"""seqkern.nn recurrent layers and cells under forward-mode AD and torch.func transforms (grad,
vmap, jvp, hessian), against torch.nn with the same weights and against the layers' own
backward, which the reference checks. The kernels' autograd Function carries neither, so both
take the layer written as ATen ops (csrc/recurrent_op.cpp); a plain call keeps the kernels.
Plain vmap has batching rules into the kernels (seqkern/ops/recurrent.py): the samples join
the batch, or an ensemble's members take a call each."""
import warnings

import pytest
import torch
from torch.autograd import forward_ad
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import seqkern
from seqkern.ops import recurrent as recurrent_ops
from nn_support import backend, draw_weights, require_backend, twin  # noqa: F401
from support import Inputs, assert_close

STEPS, BATCH, INPUT, HIDDEN = 4, 3, 5, 6
KERNEL_NODE = "RecurrentLayerFunction"

# name: (torch class, constructor arguments, whether it is a cell)
MODULES = {
    "lstm": (torch.nn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=3), False),
    "gru": (torch.nn.GRU, dict(num_layers=2, bidirectional=True), False),
    "rnn_relu": (torch.nn.RNN, dict(nonlinearity="relu"), False),
    "lstm_cell": (torch.nn.LSTMCell, {}, True),
    "gru_cell": (torch.nn.GRUCell, {}, True),
    "rnn_cell": (torch.nn.RNNCell, dict(nonlinearity="tanh"), True),
}


def module_pair(name, inputs):
    torch_class, kwargs, _ = MODULES[name]
    torch_module = draw_weights(torch_class(INPUT, HIDDEN, dtype=torch.float64, **kwargs), inputs)
    return torch_module, twin(torch_module, getattr(seqkern.nn, torch_class.__name__), INPUT, HIDDEN, **kwargs)


def module_input(name, inputs):
    shape = (BATCH, INPUT) if MODULES[name][2] else (STEPS, BATCH, INPUT)
    return inputs.randn(*shape)


def flat_outputs(result):
    """A module's tensors: (output, h_n[, c_n]) of a layer, (h'[, c']) of a cell."""
    if isinstance(result, torch.Tensor):
        return (result,)
    first, rest = result
    if isinstance(first, torch.Tensor) and isinstance(rest, torch.Tensor) and first.dim() == rest.dim() == 2:
        return (first, rest)  # LSTMCell
    return (first, *rest) if isinstance(rest, tuple) else (first, rest)


def runs_the_kernels(tensor):
    """Whether the kernels' autograd node is in the tensor's graph."""
    pending, seen = [tensor.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if KERNEL_NODE in node.name():
            return True
        pending.extend(next_node for next_node, _ in node.next_functions)
    return False


def torch_run(module, *args):
    # torch's CPU LSTM runs oneDNN, which has no forward-mode derivative; its ATen path has one.
    with torch.backends.mkldnn.flags(enabled=False):
        return module(*args)


@pytest.mark.parametrize("grad_mode", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("name", MODULES)
def test_forward_mode_ad_matches_torch(name, grad_mode, backend):
    """The outputs stay the kernels' (with a graph node of theirs in grad mode), the tangents
    match torch.nn's."""
    inputs = Inputs()
    torch_module, seqkern_module = module_pair(name, inputs)
    x, tangent = module_input(name, inputs), module_input(name, inputs)
    plain = flat_outputs(seqkern_module(x))
    with forward_ad.dual_level(), torch.set_grad_enabled(grad_mode):
        actual = [forward_ad.unpack_dual(t) for t in flat_outputs(seqkern_module(forward_ad.make_dual(x, tangent)))]
        expected = [forward_ad.unpack_dual(t)
                    for t in flat_outputs(torch_run(torch_module, forward_ad.make_dual(x, tangent)))]
    for (primal, actual_tangent), (_, expected_tangent), kernel_output in zip(actual, expected, plain):
        assert torch.equal(primal, kernel_output)
        assert_close(actual_tangent, expected_tangent)
        assert runs_the_kernels(primal) == grad_mode


@pytest.mark.parametrize("name", MODULES)
def test_torch_func_jvp_over_weights_matches_torch(name):
    require_backend("cpp")
    inputs = Inputs()
    torch_module, seqkern_module = module_pair(name, inputs)
    x = module_input(name, inputs)
    weights = {key: weight.detach() for key, weight in torch_module.named_parameters()}
    tangents = {key: inputs.randn(*weight.shape) for key, weight in weights.items()}
    x_tangent = module_input(name, inputs)

    def jvp(module):
        def call(weights, x):
            return flat_outputs(torch_run(lambda x: functional_call(module, weights, (x,)), x))
        return torch.func.jvp(call, (weights, x), (tangents, x_tangent))

    (actual_outputs, actual_tangents), (expected_outputs, expected_tangents) = jvp(seqkern_module), jvp(torch_module)
    for actual, expected in zip(actual_outputs + actual_tangents, expected_outputs + expected_tangents):
        assert_close(actual, expected)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_forward_mode_ad_through_a_packed_sequence_matches_torch(name):
    """The tangent rides on the packed data (torch's packing has no forward-mode derivative)."""
    require_backend("cpp")
    inputs = Inputs()
    torch_module, seqkern_module = module_pair(name, inputs)
    packed = pack_padded_sequence(module_input(name, inputs), torch.tensor([2, STEPS, 3]), enforce_sorted=False)
    tangent = inputs.randn(*packed.data.shape)

    def tangents(module):
        with forward_ad.dual_level():
            output, state = torch_run(module, packed._replace(data=forward_ad.make_dual(packed.data, tangent)))
            states = state if isinstance(state, tuple) else (state,)
            return [forward_ad.unpack_dual(t).tangent for t in (output.data, *states)]

    for actual, expected in zip(tangents(seqkern_module), tangents(torch_module)):
        assert_close(actual, expected)


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_relu", "gru_cell"])
def test_per_sample_gradients_with_vmap_match_one_backward_per_sample(name):
    """vmap(grad(...)): each sample's weight gradients as its own backward through the kernels
    gives them."""
    require_backend("cpp")
    inputs = Inputs()
    _, module = module_pair(name, inputs)
    samples = inputs.randn(BATCH, *module_input(name, inputs).shape[:-2], INPUT)
    weights = {key: weight.detach() for key, weight in module.named_parameters()}
    is_cell = MODULES[name][2]

    def loss(weights, sample):
        batch_of_one = sample.unsqueeze(0 if is_cell else 1)
        return sum(t.pow(2).sum() for t in flat_outputs(functional_call(module, weights, (batch_of_one,))))

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(weights, samples)
    for index, sample in enumerate(samples):
        module.zero_grad()
        loss(dict(module.named_parameters()), sample).backward()
        for key, weight in module.named_parameters():
            assert_close(per_sample[key][index], weight.grad, msg=f"sample {index}, {key}")


@pytest.mark.parametrize("name", ["lstm_cell", "gru_cell", "rnn_cell"])
def test_hessian_of_a_cell_matches_torch(name):
    require_backend("cpp")
    inputs = Inputs()
    torch_module, seqkern_module = module_pair(name, inputs)
    x = module_input(name, inputs)

    def hessian(module):
        return torch.func.hessian(lambda x: sum(t.pow(2).sum() for t in flat_outputs(module(x))))(x)

    assert_close(hessian(seqkern_module), hessian(torch_module))


def test_a_plain_call_after_a_transform_runs_the_kernels_again():
    require_backend("cpp")
    _, module = module_pair("lstm", Inputs())
    x = module_input("lstm", Inputs())
    torch.func.grad(lambda x: module(x)[0].sum())(x)
    assert runs_the_kernels(module(x)[0])


# ---------------------------------------------------- plain vmap: batching rules into the kernels
MEMBERS = 2  # not BATCH: a batch and a vmapped dimension confused would not line up


def counting_op_calls(monkeypatch):
    """The batch size of each call the batching rules make of the layer or cell op (a plain
    call takes seqkern._C's entry instead)."""
    calls = []
    for name, batch_axis in (("recurrent_layer", 1), ("recurrent_cell", 0)):
        def counting(*args, op=getattr(recurrent_ops, name), batch_axis=batch_axis):
            calls.append(args[0].shape[batch_axis])
            return op(*args)

        monkeypatch.setattr(recurrent_ops, name, counting)
    return calls


@pytest.mark.parametrize("op", ["recurrent_layer", "recurrent_cell"])
def test_the_ops_have_batching_rules(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"seqkern::{op}", "FuncTorchBatched")


@pytest.mark.parametrize("name", MODULES)
def test_vmap_over_samples_matches_torch_per_sample(name, backend, monkeypatch):
    """Shared weights: the vmapped dimension joins the batch, one kernel call per layer and
    direction for all samples; each sample gets torch.nn's numbers, initial states vmapped or
    shared."""
    calls = counting_op_calls(monkeypatch)
    inputs = Inputs()
    torch_module, seqkern_module = module_pair(name, inputs)
    samples = torch.stack([module_input(name, inputs) for _ in range(MEMBERS)])
    torch_result = torch_module(samples[0])
    states = tuple(torch.stack([inputs.randn(*t.shape) for _ in range(MEMBERS)])
                   for t in flat_outputs(torch_result)[(0 if MODULES[name][2] else 1):])
    state_dims = tuple(0 if index == 0 else None for index in range(len(states)))
    shared = tuple(state[0] for state in states)

    def run(module, x, *given):
        hx = tuple(given[index] if state_dims[index] == 0 else shared[index] for index in range(len(states)))
        return flat_outputs(module(x, hx if len(hx) > 1 else hx[0]))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = torch.func.vmap(lambda x, *given: run(seqkern_module, x, *given),
                                 in_dims=(0, *(0 for _ in states)))(samples, *states)
    rule_calls = len(calls)
    for index in range(MEMBERS):
        expected = run(torch_module, samples[index], *(state[index] for state in states))
        for got, wanted in zip(actual, expected):
            assert_close(got[index], wanted, msg=f"sample {index}")
    directions = 1 if MODULES[name][2] else torch_module.num_layers * (1 + torch_module.bidirectional)
    assert calls[:rule_calls] == [MEMBERS * BATCH] * directions


@pytest.mark.parametrize("name", ["lstm", "gru", "gru_cell", "lstm_cell"])
def test_vmap_over_an_ensemble_matches_each_member(name, backend, monkeypatch):
    """Vmapped weights (torch.func.stack_module_state): one kernel call per member."""
    calls = counting_op_calls(monkeypatch)
    inputs = Inputs()
    members = [module_pair(name, inputs)[1] for _ in range(MEMBERS)]
    weights, buffers = torch.func.stack_module_state(members)
    x = module_input(name, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = torch.func.vmap(lambda w, b: flat_outputs(functional_call(members[0], (w, b), (x,))))(
            weights, buffers)
    assert len(calls) >= MEMBERS and set(calls) == {BATCH}
    for index, member in enumerate(members):
        for got, wanted in zip(actual, flat_outputs(member(x))):
            assert torch.equal(got[index], wanted)


@pytest.mark.parametrize("name", ["lstm", "gru", "lstm_cell"])
def test_grad_of_vmap_and_vmap_of_jvp_match_per_sample_runs(name, backend):
    """The rules under an outer transform (grad(vmap(...))) and over an inner one
    (vmap(jvp(...))), where the op runs as ATen ops and keeps no workspace."""
    inputs = Inputs()
    _, module = module_pair(name, inputs)
    samples = torch.stack([module_input(name, inputs) for _ in range(MEMBERS)])
    weights = {key: weight.detach() for key, weight in module.named_parameters()}

    def loss(weights):
        outputs = torch.func.vmap(lambda x: flat_outputs(functional_call(module, weights, (x,))))(samples)
        return sum(t.pow(2).sum() for t in outputs)

    gradients = torch.func.grad(loss)(weights)
    module.zero_grad()
    sum(sum(t.pow(2).sum() for t in flat_outputs(module(x))) for x in samples).backward()
    for key, weight in module.named_parameters():
        assert_close(gradients[key], weight.grad, msg=key)

    def tangent(x):
        return torch.func.jvp(lambda y: flat_outputs(module(y))[0], (x,), (torch.ones_like(x),))[1]

    expected = torch.stack([tangent(x) for x in samples])
    assert_close(torch.func.vmap(tangent)(samples), expected)
