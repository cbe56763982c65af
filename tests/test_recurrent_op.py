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
