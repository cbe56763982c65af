"""How seqkern::recurrent_layer is registered: schemas, CPU kernel and autograd in C++
(csrc/recurrent_op.cpp), the fake and CUDA kernels and the backend override in Python."""
import pytest
import torch

import seqkern
from seqkern import _backend
from seqkern.ops import recurrent
from support import Inputs, assert_close

pytest.importorskip("seqkern._C", reason="the C++ extension is not built")

OPS = ("seqkern::recurrent_layer", "seqkern::recurrent_layer_backward")


@pytest.mark.parametrize("op", OPS)
def test_cpu_and_autograd_kernels_are_registered_in_cpp(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Autograd")
    table = torch._C._dispatch_dump_table(op).splitlines()
    for key in ("CPU:", "AutogradCPU:"):
        line = next(line for line in table if line.startswith(key))
        assert "recurrent_op.cpp" in line, line


def _lstm_training_step(module, x):
    output, (h_n, c_n) = module(x)
    (output.sum() + h_n.sum() + c_n.sum()).backward()
    return output


def test_default_cpu_path_runs_no_python_backend_code(monkeypatch):
    """Without SEQKERN_BACKEND, a training step goes from functional straight into C++."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)

    def fail(*args):
        raise AssertionError("the Python backend dispatch ran on the default CPU path")

    monkeypatch.setattr(_backend, "implementation", fail)
    module = seqkern.nn.LSTM(5, 7)
    x = Inputs().randn(4, 3, 5, dtype=torch.float32, requires_grad=True)
    _lstm_training_step(module, x)
    assert x.grad is not None and module.weight_hh_l0.grad is not None


def test_override_routes_forward_and_backward_to_the_named_backend(monkeypatch):
    inputs = Inputs()
    x = inputs.randn(4, 3, 5, requires_grad=True)
    module = seqkern.nn.LSTM(5, 7).double()
    called = []
    original = _backend.implementation

    def spy(family, name, device):
        called.append((_backend.backend_for(device), name))
        return original(family, name, device)

    monkeypatch.setattr(_backend, "implementation", spy)
    monkeypatch.setenv("SEQKERN_BACKEND", "reference")
    reference_output = _lstm_training_step(module, x)
    reference_grads = [x.grad.clone(), module.weight_hh_l0.grad.clone()]
    assert called == [("reference", "recurrent_layer_forward"), ("reference", "recurrent_layer_backward")]

    called.clear()
    x.grad = None
    module.zero_grad()
    monkeypatch.setenv("SEQKERN_BACKEND", "cpp")
    cpp_output = _lstm_training_step(module, x)
    assert called == [("cpp", "recurrent_layer_forward"), ("cpp", "recurrent_layer_backward")]
    assert_close(cpp_output, reference_output)
    for cpp_grad, reference_grad in zip([x.grad, module.weight_hh_l0.grad], reference_grads):
        assert_close(cpp_grad, reference_grad)


@pytest.mark.parametrize("override", ["", "reference"])
def test_bad_shape_is_a_value_error_with_or_without_override(monkeypatch, override):
    monkeypatch.setenv("SEQKERN_BACKEND", override)
    inputs = Inputs()
    x = inputs.randn(4, 3, 5)
    h0 = inputs.randn(3, 7)
    c0 = inputs.randn(3, 6)  # should be (3, 7)
    w_ih, w_hh = inputs.randn(28, 5), inputs.randn(28, 7)
    with pytest.raises(ValueError, match=r"c0 must have shape \(3, 7\), got \(3, 6\)"):
        recurrent.recurrent_layer(x, h0, c0, w_ih, w_hh, None, None, None, None, None, "lstm", False)


def test_unused_outputs_need_no_gradient_buffers(monkeypatch):
    """Gradients flow when only h_n is used: backward makes the zeros for output and c_n."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    inputs = Inputs()
    module = seqkern.nn.GRU(5, 6).double()
    x = inputs.randn(3, 2, 5, requires_grad=True)
    _, h_n = module(x)
    h_n.sum().backward()
    twin = torch.nn.GRU(5, 6).double()
    twin.load_state_dict(module.state_dict())
    x_twin = x.detach().clone().requires_grad_()
    twin(x_twin)[1].sum().backward()
    assert_close(x.grad, x_twin.grad)
    assert_close(module.weight_ih_l0.grad, twin.weight_ih_l0.grad)


def test_no_grad_for_frozen_weights(monkeypatch):
    """needs_input_grad reaches the kernel: frozen weights get no gradient, the input does."""
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    module = seqkern.nn.LSTM(5, 7, proj_size=3)
    module.requires_grad_(False)
    x = Inputs().randn(4, 3, 5, dtype=torch.float32, requires_grad=True)
    _lstm_training_step(module, x)
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in module.parameters())


def test_cell_op_is_composite_over_the_layer_op():
    """The step has no kernels of its own: every backend's comes from the composite."""
    op = "seqkern::recurrent_cell"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CompositeImplicitAutograd")
    table = torch._C._dispatch_dump_table(op).splitlines()
    for key in ("CPU:", "CUDA:"):
        line = next(line for line in table if line.startswith(key))
        assert "recurrent_op.cpp" in line and "math kernel" in line, line


@pytest.mark.parametrize("cell, gates, peephole_rows", [("lstm", 4, 3), ("lstm_coupled", 3, 2), ("gru", 3, 0),
                                                       ("gru_reset_before", 3, 0), ("rnn_relu", 1, 0)])
def test_cell_op_gradcheck_and_matches_the_layer_at_one_step(monkeypatch, cell, gates, peephole_rows):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    inputs = Inputs()
    batch, input_size, hidden = 3, 5, 4
    x = inputs.randn(batch, input_size, requires_grad=True)
    h = inputs.randn(batch, hidden, requires_grad=True)
    c = inputs.randn(batch, hidden, requires_grad=True) if cell.startswith("lstm") else None
    weights = [inputs.randn(gates * hidden, input_size, requires_grad=True),
               inputs.randn(gates * hidden, hidden, requires_grad=True),
               inputs.randn(gates * hidden, requires_grad=True), inputs.randn(gates * hidden, requires_grad=True)]
    w_peep = inputs.randn(peephole_rows, hidden, requires_grad=True) if peephole_rows else None
    h_new, c_new = recurrent.recurrent_cell(x, h, c, *weights, w_peep, cell)
    _, h_n, c_n, _ = recurrent.recurrent_layer(x.unsqueeze(0), h, c, *weights, None, w_peep, None, cell, False)
    assert torch.equal(h_new, h_n) and torch.equal(c_new, c_n)

    differentiable = [t for t in (x, h, c, *weights, w_peep) if t is not None]

    def step(*tensors):
        values = iter(tensors)
        args = [next(values) if t is not None else None for t in (x, h, c, *weights, w_peep)]
        h_next, c_next = recurrent.recurrent_cell(*args, cell)
        return (h_next, c_next) if c is not None else h_next

    assert torch.autograd.gradcheck(step, differentiable, eps=1e-6, atol=1e-7)


def test_cell_module_loop_compiles_fullgraph(monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    torch._dynamo.reset()
    inputs = Inputs()
    cell = seqkern.nn.LSTMCell(5, 6)
    x = inputs.randn(3, 2, 5, dtype=torch.float32)

    def unrolled(sequence):
        h = c = sequence.new_zeros((2, 6))
        for step in sequence:
            h, c = cell(step, (h, c))
        return h.sum() + c.sum()

    def gradients(function):
        cell.zero_grad()
        function(x).backward()
        return [p.grad.clone() for p in cell.parameters()]

    eager = gradients(unrolled)
    compiled = gradients(torch.compile(unrolled, fullgraph=True, backend="aot_eager"))
    for got, expected in zip(compiled, eager):
        assert_close(got, expected)


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru_reset_before", 3)])
def test_cell_op_opcheck(monkeypatch, cell, gates):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    inputs = Inputs()
    x = inputs.randn(3, 5, requires_grad=True)
    h = inputs.randn(3, 4, requires_grad=True)
    c = inputs.randn(3, 4) if cell == "lstm" else None
    w_ih, w_hh = inputs.randn(gates * 4, 5, requires_grad=True), inputs.randn(gates * 4, 4, requires_grad=True)
    torch.library.opcheck(torch.ops.seqkern.recurrent_cell.default,
                          (x, h, c, w_ih, w_hh, inputs.randn(gates * 4), None, None, cell))


def test_cell_op_wants_two_dimensional_input():
    inputs = Inputs()
    with pytest.raises(ValueError, match="recurrent cell: input must be 2-D"):
        recurrent.recurrent_cell(inputs.randn(2, 3, 5), inputs.randn(3, 4), None, inputs.randn(4, 5),
                                 inputs.randn(4, 4), None, None, None, "rnn_tanh")
