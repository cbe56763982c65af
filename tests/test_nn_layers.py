"""seqkern.nn RNN / LSTM / GRU against torch.nn with the same weights and against
seqkern.reference: outputs, final states and every gradient, on each CPU backend."""
import pickle

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import seqkern
from nn_support import (assert_runs_close, backend, draw_weights, reference_layer_run, require_backend,  # noqa: F401
                        run_layer, sequence_data, twin)
from support import Inputs, assert_close, with_odd_unit_strides

STEPS, BATCH, INPUT, HIDDEN, PROJ = 5, 3, 7, 13, 5

# A pairwise-covering selection of (mode, bias, batch_first, bidirectional, num_layers,
# proj_size, input kind, hx given): every value of each factor meets every value of the
# others that matter within each mode, instead of the full product.
CASES = [
    ("lstm", True, False, False, 1, 0, "padded", False),
    ("lstm", True, True, True, 2, PROJ, "packed_unsorted", True),
    ("lstm", False, False, True, 3, 0, "packed_sorted", False),
    ("lstm", True, False, False, 2, PROJ, "unbatched", True),
    ("lstm", False, True, False, 1, PROJ, "padded", True),
    ("lstm", True, True, True, 3, 0, "unbatched", False),
    ("lstm", True, False, True, 1, PROJ, "packed_sorted", True),
    ("lstm", False, True, True, 2, 0, "packed_unsorted", False),
    ("gru", True, False, True, 2, 0, "padded", True),
    ("gru", False, True, False, 3, 0, "packed_unsorted", False),
    ("gru", True, True, False, 1, 0, "unbatched", True),
    ("gru", False, False, True, 1, 0, "packed_sorted", True),
    ("gru", True, False, False, 3, 0, "padded", False),
    ("gru", True, True, True, 2, 0, "unbatched", False),
    ("rnn_tanh", True, False, False, 1, 0, "padded", True),
    ("rnn_tanh", False, True, True, 2, 0, "packed_unsorted", True),
    ("rnn_relu", True, True, False, 3, 0, "packed_sorted", False),
    ("rnn_relu", False, False, True, 1, 0, "unbatched", True),
    ("rnn_tanh", True, False, True, 3, 0, "unbatched", False),
    ("rnn_relu", True, True, True, 2, 0, "padded", False),
]
FLOAT32_CASES = [CASES[1], CASES[5], CASES[8], CASES[15]]


def case_id(case):
    mode, bias, batch_first, bidirectional, layers, proj, kind, hx_given = case
    return (f"{mode}-{'bias' if bias else 'nobias'}-{'bf' if batch_first else 'tf'}-"
            f"{'bi' if bidirectional else 'uni'}-L{layers}-P{proj}-{kind}-{'hx' if hx_given else 'nohx'}")


def build_pair(mode, bias, batch_first, bidirectional, num_layers, proj, dtype, inputs, **extra):
    """A torch.nn module with weights drawn from ``inputs`` and its seqkern twin."""
    kwargs = dict(bias=bias, batch_first=batch_first, bidirectional=bidirectional, dtype=dtype)
    if mode == "lstm":
        torch_class, seqkern_class = torch.nn.LSTM, seqkern.nn.LSTM
        kwargs["proj_size"] = proj
    elif mode == "gru":
        torch_class, seqkern_class = torch.nn.GRU, seqkern.nn.GRU
    else:
        torch_class, seqkern_class = torch.nn.RNN, seqkern.nn.RNN
        kwargs["nonlinearity"] = mode.split("_")[1]
    torch_module = torch_class(INPUT, HIDDEN, num_layers, **kwargs)
    draw_weights(torch_module, inputs)
    return torch_module, twin(torch_module, seqkern_class, INPUT, HIDDEN, num_layers, **kwargs)


def layer_data(module, kind, hx_given, dtype, inputs):
    directions = 2 if module.bidirectional else 1
    rows = module.num_layers * directions
    out_size = module.proj_size or module.hidden_size
    c_shape = (rows, module.hidden_size) if isinstance(module, torch.nn.LSTM) else None
    return sequence_data(inputs, kind, STEPS, BATCH, INPUT, directions * out_size, (rows, out_size),
                         c_shape, dtype, hx_given)


def check_case(case, dtype):
    inputs = Inputs()
    mode, bias, batch_first, bidirectional, num_layers, proj, kind, hx_given = case
    torch_module, seqkern_module = build_pair(mode, bias, batch_first, bidirectional, num_layers,
                                              proj, dtype, inputs)
    data = layer_data(torch_module, kind, hx_given, dtype, inputs)
    result = run_layer(seqkern_module, data)
    assert_runs_close(result, run_layer(torch_module, data), dtype)
    assert_runs_close(result, reference_layer_run(seqkern_module, data), dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_layer_float64_matches_torch_and_reference(case, backend):
    check_case(case, torch.float64)


@pytest.mark.parametrize("case", FLOAT32_CASES, ids=case_id)
def test_layer_float32_matches_torch_and_reference(case, backend):
    check_case(case, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", [CASES[1], CASES[8], CASES[15]], ids=case_id)
def test_layer_reduced_precision_matches_reference(case, dtype, monkeypatch):
    """float16 and bfloat16 modules (torch.nn runs both on CPU) keep their dtype in every
    output and gradient; the reference computes in float64 from the same rounded weights.
    The C++ backend only: it runs its backward from a float32 forward, where the reference
    backend reads the workspace it returned, rounded to the layer's dtype."""
    require_backend("cpp")
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    inputs = Inputs()
    mode, bias, batch_first, bidirectional, num_layers, proj, kind, hx_given = case
    _, seqkern_module = build_pair(mode, bias, batch_first, bidirectional, num_layers, proj, dtype, inputs)
    data = layer_data(seqkern_module, kind, hx_given, dtype, inputs)
    result = run_layer(seqkern_module, data)
    for name in ("output", "h_n", "grad_input", "grad_h0"):
        assert result[name].dtype == dtype, name
    assert all(grad.dtype == dtype for grad in result["parameter_grads"].values())
    assert_runs_close(result, reference_layer_run(seqkern_module, data), dtype)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_empty_batch(mode, backend):
    inputs = Inputs()
    torch_module, seqkern_module = build_pair(mode, True, False, True, 2, 0, torch.float64, inputs)
    x = inputs.randn(STEPS, 0, INPUT, requires_grad=True)
    output, hidden = seqkern_module(x)
    expected_output, expected_hidden = torch_module(x)
    assert output.shape == expected_output.shape == (STEPS, 0, 2 * HIDDEN)
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    expected_hidden = expected_hidden if isinstance(expected_hidden, tuple) else (expected_hidden,)
    assert [h.shape for h in hidden] == [h.shape for h in expected_hidden]
    (output.sum() + sum(h.sum() for h in hidden)).backward()
    assert x.grad.shape == x.shape
    for parameter in seqkern_module.parameters():
        assert parameter.grad is not None and not parameter.grad.any()


@pytest.mark.parametrize("batch", [BATCH, 1])
@pytest.mark.parametrize("torch_class, seqkern_class", [(torch.nn.LSTM, seqkern.nn.LSTM), (torch.nn.GRU, seqkern.nn.GRU),
                                                        (torch.nn.RNN, seqkern.nn.RNN)], ids=["lstm", "gru", "rnn"])
def test_one_feature_inputs_from_a_transpose_match_torch(torch_class, seqkern_class, batch, backend):
    """Batch-first series of one feature as a transpose leaves them: contiguous, but with a
    stride on a size-1 dimension that a copy would not have (B series of one step from a
    (1, 1, B) tensor; one series and its states). The C++ kernels once read that stride as
    the column step of the input projection."""
    inputs = Inputs()
    torch_module = draw_weights(torch_class(1, HIDDEN, batch_first=True, bidirectional=True, dtype=torch.float64),
                                inputs)
    seqkern_module = twin(torch_module, seqkern_class, 1, HIDDEN, batch_first=True, bidirectional=True,
                          dtype=torch.float64)
    if batch == 1:
        x = with_odd_unit_strides(inputs.randn(1, STEPS, 1))
        states = [with_odd_unit_strides(inputs.randn(2, 1, HIDDEN)) for _ in range(2)]
    else:
        x = inputs.randn(1, 1, batch).permute(2, 1, 0)
        assert x.is_contiguous() and x.stride() == (1, batch, batch)
        states = [inputs.randn(2, batch, HIDDEN) for _ in range(2)]
    hx = tuple(states) if torch_class is torch.nn.LSTM else states[0]
    results = []
    for module in (torch_module, seqkern_module):
        leaf = x.detach().requires_grad_()
        output, hidden = module(leaf, hx)
        finals = hidden if isinstance(hidden, tuple) else (hidden,)
        loss = (output * torch.arange(output.numel(), dtype=output.dtype).view(output.shape)).sum()
        loss = loss + sum(final.sum() for final in finals)
        grads = torch.autograd.grad(loss, [leaf, *module.parameters()])
        results.append([output, *finals, *grads])
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)


def test_packed_unsorted_final_state_equals_each_sequence_alone(backend):
    inputs = Inputs()
    _, module = build_pair("lstm", True, False, True, 2, 0, torch.float64, inputs)
    lengths = [2, 5, 1, 4]
    sequences = [inputs.randn(n, INPUT) for n in lengths]
    output, (h_n, c_n) = module(pack_sequence(sequences, enforce_sorted=False))
    padded, output_lengths = pad_packed_sequence(output)
    assert output_lengths.tolist() == lengths
    for b, sequence in enumerate(sequences):
        alone_output, (alone_h, alone_c) = module(sequence.unsqueeze(1))
        assert_close(h_n[:, b], alone_h[:, 0])
        assert_close(c_n[:, b], alone_c[:, 0])
        assert_close(padded[:lengths[b], b], alone_output[:, 0])
        assert not padded[lengths[b]:, b].any()


def test_retain_graph_backward_twice(backend):
    inputs = Inputs()
    _, module = build_pair("gru", True, False, True, 2, 0, torch.float64, inputs)
    x = inputs.randn(STEPS, BATCH, INPUT, requires_grad=True)
    output, h_n = module(x)
    loss = output.square().sum() + h_n.sum()
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    assert_close(x.grad, 2 * first)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_gradcheck(mode, backend):
    inputs = Inputs()
    module = {"lstm": seqkern.nn.LSTM(3, 4, 2, bidirectional=True, proj_size=2),
              "gru": seqkern.nn.GRU(3, 4, 2, bidirectional=True),
              "rnn_relu": seqkern.nn.RNN(3, 4, 2, nonlinearity="relu", bidirectional=True)}[mode].double()
    x = inputs.randn(4, 2, 3, requires_grad=True)
    names = [name for name, _ in module.named_parameters()]

    def outputs(x, *weights):
        output, hidden = torch.func.functional_call(module, dict(zip(names, weights)), (x,))
        return (output, *hidden) if isinstance(hidden, tuple) else (output, hidden)

    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]
    assert torch.autograd.gradcheck(outputs, (x, *weights), fast_mode=True)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_gradient_penalty_matches_torch(mode, backend):
    """Double backward (create_graph=True, then backward), as a gradient penalty uses it: the
    penalty's gradients of the input and every weight match torch.nn's (its LSTM without
    oneDNN, which has no double backward)."""
    inputs = Inputs()
    torch_module, seqkern_module = build_pair(mode, True, False, True, 2, PROJ if mode == "lstm" else 0,
                                              torch.float64, inputs)
    x = inputs.randn(STEPS, BATCH, INPUT)
    results = []
    for module in (torch_module, seqkern_module):
        leaf = x.clone().requires_grad_()
        with torch.backends.mkldnn.flags(enabled=False):
            output, _ = module(leaf)
            (grad,) = torch.autograd.grad(output.pow(2).sum(), leaf, create_graph=True)
            grad.pow(2).sum().backward()
        results.append([leaf.grad] + [parameter.grad for parameter in module.parameters()])
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_hessian_vector_products_and_third_derivatives_match_torch(mode, backend):
    """torch.autograd.functional.hvp differentiates a second backward run with
    create_graph=True (the double-vjp trick), and so does a third derivative: the second
    derivatives are differentiable in turn."""
    inputs = Inputs()
    torch_module, seqkern_module = build_pair(mode, True, False, False, 1, 0, torch.float64, inputs)
    x, direction = inputs.randn(3, 2, INPUT), inputs.randn(3, 2, INPUT)
    results = []
    for module in (torch_module, seqkern_module):
        def loss(x):
            return module(x)[0].pow(2).sum()

        with torch.backends.mkldnn.flags(enabled=False):
            hvp = torch.autograd.functional.hvp(loss, x, direction)[1]
            leaf = x.clone().requires_grad_()
            (first,) = torch.autograd.grad(loss(leaf), leaf, create_graph=True)
            (second,) = torch.autograd.grad((first * direction).sum(), leaf, create_graph=True)
            (third,) = torch.autograd.grad((second * direction).sum(), leaf)
        results.append((hvp, third))
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_dropout_training_matches_torch_and_eval_turns_it_off(mode, backend):
    inputs = Inputs()
    torch_module, seqkern_module = build_pair(mode, True, False, True, 3, 0, torch.float64, inputs)
    torch_module.dropout = seqkern_module.dropout = 0.4
    x = inputs.randn(STEPS, BATCH, INPUT)
    # Both draw one dropout mask per inner layer output, in the same order and shape.
    torch.manual_seed(5)
    expected = torch_module(x)[0]
    torch.manual_seed(5)
    actual = seqkern_module(x)[0]
    assert_close(actual, expected)
    torch_module.eval()
    seqkern_module.eval()
    assert_close(seqkern_module(x)[0], torch_module(x)[0])
    assert not torch.allclose(seqkern_module(x)[0], actual)


def test_dropout_is_read_at_call_time_and_scaled(backend):
    inputs = Inputs()
    _, module = build_pair("gru", True, False, False, 2, 0, torch.float64, inputs)
    x = inputs.randn(STEPS, BATCH, INPUT)
    module.eval()
    without = module(x)[0]
    module.train()
    assert_close(module(x)[0], without)
    module.dropout = 1.0
    # Everything between the layers is dropped: layer 2 sees a zero input.
    layer2 = seqkern.nn.GRU(HIDDEN, HIDDEN, dtype=torch.float64)
    layer2.load_state_dict({name[:-1] + "0": value for name, value in module.state_dict().items()
                            if name.endswith("l1")})
    assert_close(module(x)[0], layer2(torch.zeros(STEPS, BATCH, HIDDEN, dtype=torch.float64))[0])
    module.dropout = 0.5
    layer1 = seqkern.nn.GRU(INPUT, HIDDEN, dtype=torch.float64)
    layer1.load_state_dict({name: value for name, value in module.state_dict().items() if name.endswith("l0")})
    torch.manual_seed(3)
    actual = module(x)[0]
    torch.manual_seed(3)
    kept = torch.empty(STEPS, BATCH, HIDDEN, dtype=torch.float64).bernoulli_(0.5)
    dropped = layer1(x)[0] * kept / 0.5
    assert_close(actual, layer2(dropped)[0])


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
def test_weight_norm_matches_torch(backend):
    inputs = Inputs()
    torch_module, seqkern_module = build_pair("lstm", True, False, True, 2, PROJ, torch.float64, inputs)
    for module in (torch_module, seqkern_module):
        torch.nn.utils.weight_norm(module, "weight_hh_l0")
        torch.nn.utils.weight_norm(module, "weight_hr_l1_reverse")
    data = layer_data(torch_module, "packed_unsorted", True, torch.float64, inputs)
    result = run_layer(seqkern_module, data)
    assert "weight_hh_l0_g" in result["parameter_grads"]
    assert_runs_close(result, run_layer(torch_module, data), torch.float64)


class _Scaled(torch.nn.Module):
    def forward(self, weight):
        return weight * 0.5 + 0.1


def test_parametrized_and_replaced_weights_match_torch(backend):
    """The weights each forward reads follow a parametrization and a replaced parameter."""
    inputs = Inputs()
    torch_module, seqkern_module = build_pair("gru", True, False, True, 2, 0, torch.float64, inputs)
    data = layer_data(torch_module, "padded", True, torch.float64, inputs)
    assert_runs_close(run_layer(seqkern_module, data), run_layer(torch_module, data), torch.float64)
    for module in (torch_module, seqkern_module):
        torch.nn.utils.parametrize.register_parametrization(module, "weight_hh_l1", _Scaled())
    result = run_layer(seqkern_module, data)
    assert "parametrizations.weight_hh_l1.original" in result["parameter_grads"]
    assert_runs_close(result, run_layer(torch_module, data), torch.float64)
    replacement = inputs.uniform(*seqkern_module.weight_ih_l0.shape)
    for module in (torch_module, seqkern_module):
        module.weight_ih_l0 = torch.nn.Parameter(replacement.clone())
    assert_runs_close(run_layer(seqkern_module, data), run_layer(torch_module, data), torch.float64)


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_activation_checkpointing_and_saved_tensor_hooks_match_torch(use_reentrant):
    """torch.utils.checkpoint recomputes the layer in backward; saved-tensor hooks (offloading)
    see what the op saves. Both give torch.nn's gradients."""
    inputs = Inputs()
    torch_module, seqkern_module = build_pair("lstm", True, False, True, 2, PROJ, torch.float64, inputs)
    x = inputs.randn(STEPS, BATCH, INPUT, requires_grad=True)
    packed = []

    def pack(tensor):
        packed.append(tensor.shape)
        return tensor.clone()

    results = []
    for module in (torch_module, seqkern_module):
        module.zero_grad()
        x.grad = None
        output = torch.utils.checkpoint.checkpoint(lambda inp, module=module: module(inp)[0], x,
                                                   use_reentrant=use_reentrant)
        output.square().sum().backward()
        results.append([output.detach(), x.grad.clone(), *(p.grad.clone() for p in module.parameters())])
    for actual, expected in zip(results[1], results[0]):
        assert_close(actual, expected)
    seqkern_module.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = seqkern_module(x)[0]
    assert packed
    output.square().sum().backward()
    for parameter, expected in zip(seqkern_module.parameters(), results[0][2:]):
        assert_close(parameter.grad, expected)


def test_functional_call_and_pickle_roundtrip(backend):
    inputs = Inputs()
    torch_module, seqkern_module = build_pair("lstm", True, True, True, 2, PROJ, torch.float64, inputs)
    x = inputs.randn(BATCH, STEPS, INPUT)
    replaced = {name: inputs.uniform(*p.shape) for name, p in torch_module.named_parameters()}
    expected = torch.func.functional_call(torch_module, replaced, (x,))
    actual = torch.func.functional_call(seqkern_module, replaced, (x,))
    assert_close(actual[0], expected[0])
    assert_close(actual[1][1], expected[1][1])
    # After functional_call the module computes with its own weights again.
    assert_close(seqkern_module(x)[0], torch_module(x)[0])
    restored = pickle.loads(pickle.dumps(seqkern_module))
    assert type(restored) is seqkern.nn.LSTM
    assert_close(restored(x)[0], torch_module(x)[0])


# ------------------------------------------------ torch.compile and torch.export of whole modules
#
# Dynamo refuses every instance of torch.nn.RNN, GRU and LSTM (seqkern's modules are
# subclasses, so that isinstance holds) unless torch._dynamo.config.allow_rnn is set; with it,
# a seqkern layer traces into its registered ops and compiles without graph breaks. Packed
# input is left out: torch's own check_forward_args reads batch_sizes[0], a data-dependent
# value that fullgraph cannot guard on (torch.nn.LSTM fails the same way).

COMPILED_CASES = [CASES[4], CASES[5], CASES[8], CASES[14]]


@pytest.mark.parametrize("case", COMPILED_CASES, ids=case_id)
def test_module_compiles_fullgraph_with_allow_rnn(case, monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    torch._dynamo.reset()
    inputs = Inputs()
    mode, bias, batch_first, bidirectional, num_layers, proj, kind, hx_given = case
    torch_module, seqkern_module = build_pair(mode, bias, batch_first, bidirectional, num_layers, proj,
                                              torch.float64, inputs)
    counter = CompileCounterWithBackend("aot_eager")
    seqkern_module.compile(fullgraph=True, backend=counter)
    data = layer_data(torch_module, kind, hx_given, torch.float64, inputs)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled_run = run_layer(seqkern_module, data)
    assert counter.frame_count == 1
    assert_runs_close(compiled_run, run_layer(torch_module, data), torch.float64)


def test_module_without_allow_rnn_names_the_flag(monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    torch._dynamo.reset()
    module = seqkern.nn.GRU(INPUT, HIDDEN)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(allow_rnn=False), pytest.raises(torch._dynamo.exc.Unsupported,
                                                                    match="allow_rnn"):
        compiled(Inputs().randn(STEPS, BATCH, INPUT, dtype=torch.float32))


# torch.nn's modules warn the same way: forward refreshes _flat_weights, as torch's does.
@pytest.mark.filterwarnings("ignore:The tensor attributes self._flat_weights")
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_module_exports_with_dynamic_steps_and_batch(mode, monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    inputs = Inputs()
    torch_module, seqkern_module = build_pair(mode, True, True, True, 2, PROJ if mode == "lstm" else 0,
                                              torch.float64, inputs)
    dims = {0: torch.export.Dim("batch", min=2, max=64), 1: torch.export.Dim("steps", min=2, max=256)}
    program = torch.export.export(seqkern_module, (inputs.randn(BATCH, STEPS, INPUT),),
                                  dynamic_shapes={"input": dims})
    targets = {node.target for node in program.graph.nodes if node.op == "call_function"}
    assert torch.ops.seqkern.recurrent_layer.default in targets
    for batch, steps in ((BATCH, STEPS), (BATCH + 4, 2 * STEPS + 1)):
        x = inputs.randn(batch, steps, INPUT)
        output, hidden = program.module()(x)
        expected_output, expected_hidden = torch_module(x)
        assert_close(output, expected_output)
        for state, expected in zip(hidden if mode == "lstm" else (hidden,),
                                   expected_hidden if mode == "lstm" else (expected_hidden,)):
            assert_close(state, expected)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_layers_compute_in_their_own_dtype_under_cpu_autocast(kind, monkeypatch):
    """What README says of torch.autocast: the layers run in the dtype of their input and
    weights (seqkern registers no autocast kernel), so a float32 layer gives its float32
    numbers, bit for bit, inside an autocast region too; torch.nn's LSTM and RNN return
    bfloat16 there."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    layer = getattr(seqkern.nn, kind)(5, 7, num_layers=2)
    x = Inputs().randn(4, 3, 5, dtype=torch.float32)
    expected, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, _ = layer(x)
    assert output.dtype == torch.float32
    assert torch.equal(output, expected)
