"""The benchmark cases: what each one runs for torch and for seqkern, and its hardware floor.

Dimension legend
  T  time steps      B  batch       I  input features      H  hidden units
  G  gate blocks (LSTM 4, GRU 3, RNN 1)
  N  batch (pooling) C  channels    S  spatial extent, 1 to 3 axes

A case is prepared into "steps": one callable per contender ("torch", "seqkern") that runs
the timed work once and returns the tensors the correctness check compares, by name
(outputs and, for training, gradients). How seqkern is built for a case is a function
argument (``Builders``), so a test can inject a deliberately wrong implementation.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from seqkern import BackendUnavailableError

SEED = 20261121
RECURRENT_OPS = ("lstm", "gru", "rnn")
# The cells, run as a decoder runs them: a Python loop of T steps, one module call a step.
CELL_OPS = ("lstm_cell", "gru_cell", "rnn_cell")
POOLING_OPS = ("max_pool1d", "max_pool2d", "max_pool3d")
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "lstm_cell": 4, "gru_cell": 3, "rnn_cell": 1}
MODULE_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN",
                "lstm_cell": "LSTMCell", "gru_cell": "GRUCell", "rnn_cell": "RNNCell"}
MODES = ("inference", "training")
# Training = forward + input-gradient GEMMs + weight-gradient GEMMs, each as many FLOPs as forward.
TRAINING_FLOP_FACTOR = 3

Step = Callable[[], Dict[str, torch.Tensor]]


class SeqkernUnavailable(Exception):
    """seqkern has no implementation for this case here (not written yet, backend not built)."""


# What seqkern raises when it cannot run a case here: the case is reported "n/a", not FAILED.
UNAVAILABLE_ERRORS = (SeqkernUnavailable, BackendUnavailableError, NotImplementedError)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class RecurrentCase:
    op: str                 # lstm | gru | rnn, or a cell: lstm_cell | gru_cell | rnn_cell
    mode: str               # inference | training
    steps: int              # T
    batch: int              # B
    input_size: int         # I
    hidden: int             # H
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    family: str = field(default="recurrent", init=False)

    @property
    def label(self) -> str:
        mode = "infer" if self.mode == "inference" else "train"
        extra = "" if self.input_size == self.hidden else f" I={self.input_size}"
        return f"{self.op} {mode} T={self.steps} B={self.batch} H={self.hidden}{extra}"

    @property
    def key(self) -> str:
        return f"{self.label} [{self.device} {_dtype_name(self.dtype)}]"

    def floor_work(self) -> Tuple[str, float]:
        """("flops", matmul FLOPs of one step of this case)."""
        gates = GATES[self.op]
        forward = 2.0 * self.steps * self.batch * gates * self.hidden * (self.input_size + self.hidden)
        return "flops", forward * (TRAINING_FLOP_FACTOR if self.mode == "training" else 1)

    def describe(self) -> dict:
        return {"T": self.steps, "B": self.batch, "I": self.input_size, "H": self.hidden}


@dataclass(frozen=True)
class PoolingCase:
    op: str                         # max_pool1d | max_pool2d | max_pool3d
    mode: str                       # inference (forward, no grad) | training (forward + backward)
    shape: Tuple[int, ...]          # (N, C, *S)
    kernel: int
    stride: int
    padding: int
    channels_last: bool = False
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    family: str = field(default="pooling", init=False)

    @property
    def spatial_dims(self) -> int:
        return len(self.shape) - 2

    @property
    def label(self) -> str:
        mode = "fwd" if self.mode == "inference" else "fwd+bwd"
        layout = {1: "NCL", 2: "NHWC" if self.channels_last else "NCHW",
                  3: "NDHWC" if self.channels_last else "NCDHW"}[self.spatial_dims]
        dims = "x".join(str(s) for s in self.shape)
        return f"{self.op} {mode} k{self.kernel}s{self.stride}p{self.padding} {layout} {dims}"

    @property
    def key(self) -> str:
        return f"{self.label} [{self.device} {_dtype_name(self.dtype)}]"

    def memory_format(self) -> torch.memory_format:
        if not self.channels_last:
            return torch.contiguous_format
        return torch.channels_last if self.spatial_dims == 2 else torch.channels_last_3d

    def output_shape(self) -> Tuple[int, ...]:
        spatial = tuple((s + 2 * self.padding - self.kernel) // self.stride + 1 for s in self.shape[2:])
        return self.shape[:2] + spatial

    def floor_work(self) -> Tuple[str, float]:
        """("bytes", the least memory traffic of this case): forward reads x and writes y;
        backward reads dy and writes dx (indices can be recomputed, so they are not counted)."""
        element = torch.empty((), dtype=self.dtype).element_size()
        moved = math.prod(self.shape) + math.prod(self.output_shape())
        factor = 2 if self.mode == "training" else 1
        return "bytes", float(moved * element * factor)

    def describe(self) -> dict:
        return {"shape": list(self.shape), "kernel": self.kernel, "stride": self.stride,
                "padding": self.padding, "channels_last": self.channels_last}


# ---------------------------------------------------------------------------------------------
# Grids


def _recurrent(ops, shapes, device, dtype):
    return [RecurrentCase(op, mode, T, B, I, H, device, dtype)
            for (T, B, I, H) in shapes for op in ops for mode in MODES]


# Issue 3's CPU targets: the small and streaming shapes B in {1, 16} x H in {64, 128}, and
# PyTorch fastrnns' B=64, H=512.
DEFAULT_RECURRENT_SHAPES = [(100, B, H, H) for B in (1, 16) for H in (64, 128)] + [(100, 64, 512, 512)]
# Cell loops of a decoder's length, where each call's fixed cost counts as much as its math.
DEFAULT_CELL_SHAPES = [(10, B, 128, 128) for B in (1, 16)]
# DeepBench-style: larger H with shorter sequences, so that each shape is a similar amount of work.
FULL_RECURRENT_SHAPES = [(T, B, H, H) for H, T in ((256, 150), (512, 50), (1024, 25)) for B in (16, 32, 64)]
# Issue 6's GPU points: FlashRNN's (B=16, T=1024, H=768); fastrnns' shape is in the default grid.
CUDA_RECURRENT_SHAPES = [(1024, 16, 768, 768)]
RESNET_STEM = (32, 64, 112, 112)
# One image of a small CNN (an MNIST-sized feature map): the per-call cost dominates.
SMALL_FEATURE_MAP = (1, 16, 28, 28)
POOL_SETTINGS = ((3, 2, 1), (2, 2, 0))   # (kernel, stride, padding)


def _pooling(op, shape, layouts, device, dtype):
    return [PoolingCase(op, mode, shape, k, s, p, channels_last, device, dtype)
            for (k, s, p) in POOL_SETTINGS for channels_last in layouts for mode in MODES]


def grid(name: str, device: str, dtype: torch.dtype) -> list:
    """The cases of grid ``name`` ("smoke", "default" or "full") on one device and dtype."""
    if name == "smoke":
        return (_recurrent(RECURRENT_OPS + ("lstm_cell",), [(3, 2, 8, 8)], device, dtype)
                + _pooling("max_pool2d", (2, 3, 9, 9), (False, True), device, dtype))
    cases = _recurrent(RECURRENT_OPS, DEFAULT_RECURRENT_SHAPES, device, dtype)
    cases += _recurrent(CELL_OPS, DEFAULT_CELL_SHAPES, device, dtype)
    if device == "cuda":
        cases += _recurrent(("lstm", "gru"), CUDA_RECURRENT_SHAPES, device, dtype)
    cases += _pooling("max_pool2d", RESNET_STEM, (False, True), device, dtype)
    cases += _pooling("max_pool2d", SMALL_FEATURE_MAP, (False,), device, dtype)
    if name == "full":
        cases += _recurrent(("lstm", "gru"), FULL_RECURRENT_SHAPES, device, dtype)
        cases += _pooling("max_pool1d", (32, 256, 2048), (False,), device, dtype)
        cases += _pooling("max_pool3d", (8, 64, 16, 56, 56), (False, True), device, dtype)
    elif name != "default":
        raise ValueError(f"unknown grid {name!r}; expected smoke, default or full")
    return cases


def select(cases: list, only: Optional[List[str]]) -> list:
    """Keep the cases whose op is named in ``only`` ("pool" / "recurrent" name a family)."""
    if not only:
        return cases
    known = set(RECURRENT_OPS) | set(CELL_OPS) | set(POOLING_OPS) | {"pool", "recurrent"}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    wanted = set(only)
    return [case for case in cases
            if case.op in wanted or (case.family == "pooling" and "pool" in wanted)
            or (case.family == "recurrent" and "recurrent" in wanted)]


# ---------------------------------------------------------------------------------------------
# Building the contenders


def seqkern_recurrent(case: RecurrentCase, torch_module: torch.nn.Module) -> torch.nn.Module:
    """seqkern.nn.<LSTM|GRU|RNN|...Cell> with the torch module's weights."""
    import seqkern.nn

    name = MODULE_NAMES[case.op]
    module_class = getattr(seqkern.nn, name, None)
    if module_class is None:
        raise SeqkernUnavailable(f"seqkern.nn.{name} is not implemented yet")
    module = module_class(case.input_size, case.hidden, device=case.device, dtype=case.dtype)
    module.load_state_dict(torch_module.state_dict())
    return module


def seqkern_pooling(case: PoolingCase, torch_function: Callable) -> Callable:
    """seqkern.functional.max_pool<d>d with the case's kernel, stride and padding."""
    import seqkern.functional

    function = getattr(seqkern.functional, case.op, None)
    if function is None:
        raise SeqkernUnavailable(f"seqkern.functional.{case.op} is not implemented yet")
    return functools.partial(function, kernel_size=case.kernel, stride=case.stride, padding=case.padding)


@dataclass
class Builders:
    """How the seqkern contender is made from the torch one, per family."""
    recurrent: Callable = seqkern_recurrent
    pooling: Callable = seqkern_pooling


def _cell_loop(cell: torch.nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, object]:
    """Every step's h of a loop of ``cell`` over x (T, B, I), stacked, and the last state."""
    state, hs = None, []
    for step in x:
        state = cell(step, state)
        hs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(hs), state


def _recurrent_step(module: torch.nn.Module, x: torch.Tensor, training: bool) -> Step:
    if isinstance(module, torch.nn.RNNCellBase):
        run = functools.partial(_cell_loop, module)
    else:
        run = module
    if not training:
        def infer():
            with torch.no_grad():
                output, state = run(x)
            return {"output": output, **_state_tensors(state)}
        return infer
    parameters = dict(module.named_parameters())

    def train():
        x.grad = None
        for parameter in parameters.values():
            parameter.grad = None
        output, state = run(x)
        output.sum().backward()
        return {"output": output.detach(), "grad input": x.grad,
                **{f"grad {name}": p.grad for name, p in parameters.items()}}
    return train


def _state_tensors(state) -> Dict[str, torch.Tensor]:
    if isinstance(state, tuple):
        return {"h_n": state[0], "c_n": state[1]}
    return {"h_n": state}


def _pooling_step(function: Callable, x: torch.Tensor, grad_output: Optional[torch.Tensor]) -> Step:
    if grad_output is None:
        def forward():
            with torch.no_grad():
                return {"output": function(x)}
        return forward

    def forward_backward():
        x.grad = None
        output = function(x)
        output.backward(grad_output)
        return {"output": output.detach(), "grad input": x.grad}
    return forward_backward


def prepare(case, builders: Builders) -> Tuple[Dict[str, Step], Optional[str]]:
    """The steps of ``case``: {"torch": step, "seqkern": step}, and the reason seqkern is
    missing (then only "torch" is returned)."""
    generator = torch.Generator().manual_seed(SEED)
    training = case.mode == "training"
    if case.family == "recurrent":
        torch_module = getattr(torch.nn, MODULE_NAMES[case.op])(case.input_size, case.hidden)
        bound = 1.0 / math.sqrt(case.hidden)
        with torch.no_grad():
            for parameter in torch_module.parameters():
                parameter.uniform_(-bound, bound, generator=generator)
        torch_module = torch_module.to(case.device, case.dtype)
        x = torch.randn(case.steps, case.batch, case.input_size, generator=generator)
        x = x.to(case.device, case.dtype).requires_grad_(training)
        steps = {"torch": _recurrent_step(torch_module, x, training)}
        make_seqkern = functools.partial(builders.recurrent, case, torch_module)
        wrap = functools.partial(_recurrent_step, x=x, training=training)
    else:
        x = torch.randn(case.shape, generator=generator).to(case.device, case.dtype)
        x = x.contiguous(memory_format=case.memory_format()).requires_grad_(training)
        torch_function = functools.partial(getattr(F, case.op), kernel_size=case.kernel,
                                           stride=case.stride, padding=case.padding)
        grad_output = None
        if training:
            with torch.no_grad():
                like = torch_function(x)
            grad_output = torch.randn(like.shape, generator=generator).to(case.device, case.dtype)
            grad_output = grad_output.contiguous(memory_format=case.memory_format())
        steps = {"torch": _pooling_step(torch_function, x, grad_output)}
        make_seqkern = functools.partial(builders.pooling, case, torch_function)
        wrap = functools.partial(_pooling_step, x=x, grad_output=grad_output)
    try:
        steps["seqkern"] = wrap(make_seqkern())
    except UNAVAILABLE_ERRORS as error:
        return steps, str(error) or type(error).__name__
    return steps, None
