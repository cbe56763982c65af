"""Drop-in replacements for torch.nn.RNN / LSTM / GRU and their cells.

Each class subclasses its ``torch.nn`` counterpart, so construction, argument checks,
parameters (names, shapes, order, initialisation), ``state_dict``, ``repr``,
``_flat_weights`` bookkeeping (``torch.nn.utils.weight_norm``, parametrizations,
``functional_call``; only its check for replaced weights is seqkern's, a faster equivalent),
pickling and ``isinstance`` checks are torch's own. ``forward`` validates input the way
torch does (same exception types and messages) and then runs ``seqkern.functional``, which
calls the op ``seqkern::recurrent_layer`` once per layer and direction.

Seed extensions (``../shared/SPEC.md``), all off by default so that a default-constructed
module is indistinguishable from torch's:

    LSTM(..., peephole=True)        adds ``weight_peep_l{k}[_reverse]`` (3, H), rows (i, f, o)
    LSTM(..., coupled_gates=True)   CIFG: gate weights have 3H rows (f, g, o), i = 1 - f;
                                    with peephole, ``weight_peep_l{k}`` is (2, H), rows (f, o)
    GRU(..., reset_after=False)     Cho et al.'s GRU, reset applied before the hidden matmul
    LSTMCell(..., peephole=, coupled_gates=), GRUCell(..., reset_after=) likewise
                                    (the cell's peephole weight is ``weight_peep``)

An LSTM with an extension gets its parameters laid out per layer-direction as
weight_ih, weight_hh, [bias_ih, bias_hh], [weight_hr], [weight_peep], all initialised
U(-1/sqrt(H), 1/sqrt(H)) like torch's. The flags show in ``repr`` only when not default.
"""
from __future__ import annotations

import math

import torch
from torch.nn import Parameter, init
from torch.nn.utils.rnn import PackedSequence

from .. import functional as F
from ._scripting import NotScriptable

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")


def _extension_repr(module) -> str:
    return "".join(
        f", {name}={getattr(module, name)}"
        for name, default in module._extension_defaults.items()
        if getattr(module, name) != default
    )


def _map_state(hx, function):
    return function(hx)


def _map_state_pair(hx, function):
    """LSTM states come as (h, c)."""
    return function(hx[0]), function(hx[1])


class _RecurrentStack(NotScriptable):
    """What seqkern's RNN, LSTM and GRU change in torch.nn.RNNBase (first in their bases).

    Extension flags are class attributes as well as instance attributes, so modules built
    without them (``seqkern.convert``, pickles from before a flag existed) read the default.
    """

    _extension_defaults: dict = {}
    _input_dims_message = "{name}: Expected input to be 2D or 3D, got {dims}D instead"

    def flatten_parameters(self) -> None:
        """A no-op: seqkern reads each weight where it lives, there is no cuDNN buffer."""

    def _weights_have_changed(self) -> bool:
        """torch's check that every forward runs (a weight replaced, parametrized or passed by
        torch.func.functional_call), with one lookup per weight: torch's hasattr-then-getattr
        through Module.__getattr__ took 18 us for a two-layer bidirectional LSTM, 1 us this way."""
        parameters = self._parameters
        for ref, name in zip(self._flat_weight_refs, self._flat_weights_names):
            weight = parameters.get(name)
            if weight is None:
                # Not a registered parameter (parametrized, or a plain attribute): torch's lookup.
                weight = getattr(self, name, None)
            if weight is not None and ref is not None and ref() is not weight:
                return True
        return False

    def extra_repr(self) -> str:
        return super().extra_repr() + _extension_repr(self)

    def forward(self, input, hx=None):
        self._update_flat_weights()
        if isinstance(input, PackedSequence):
            # torch checks the states after reordering them to the sorted batch; checking
            # before is the same for every valid hx and rejects a too-large one.
            self._check_packed_dtype(input.data)
            if hx is None:
                self.check_input(input.data, input.batch_sizes)
            else:
                self.check_forward_args(input.data, hx, input.batch_sizes)
            return self._run(input, hx)
        if input.dim() not in (2, 3):
            raise ValueError(self._input_dims_message.format(name=self._message_name, dims=input.dim()))
        batched = input.dim() == 3
        if hx is not None:
            self._check_state_dims(hx, batched)
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            if hx is not None:
                hx = self._map_states(hx, lambda state: state.unsqueeze(1))
        if hx is None:
            self.check_input(input, None)
        else:
            self.check_forward_args(input, hx, None)
        output, hidden = self._run(input, hx)
        if not batched:
            output = output.squeeze(batch_dim)
            hidden = self._map_states(hidden, lambda state: state.squeeze(1))
        return output, hidden

    def _check_packed_dtype(self, data) -> None:
        """torch.nn.RNN and GRU check packed input with check_input; no extra check here."""

    def _stack_arguments(self):
        return (self._flat_weights, self.bias, self.num_layers, self.dropout, self.training,
                self.bidirectional, self.batch_first)

    def _check_state_dims(self, hx, batched: bool) -> None:
        wanted = 3 if batched else 2
        if hx.dim() != wanted:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx should also be {wanted}-D but got {hx.dim()}-D tensor"
            )

    _map_states = staticmethod(_map_state)


class RNN(_RecurrentStack, torch.nn.RNN):
    """``torch.nn.RNN`` (Elman, tanh or relu) computed by seqkern's fused recurrent op."""

    _message_name = "RNN"
    _input_dims_message = "{name}: Expected input to be 2D or 3D, got {dims}D tensor instead"

    def _run(self, input, hx):
        nonlinearity = "tanh" if self.mode == "RNN_TANH" else "relu"
        return F.rnn(input, hx, *self._stack_arguments(), nonlinearity=nonlinearity)


class GRU(_RecurrentStack, torch.nn.GRU):
    """``torch.nn.GRU`` computed by seqkern's fused recurrent op.

    Extra keyword argument: ``reset_after`` (default True, torch's GRU). False gives the
    GRU of Cho et al. 2014, ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``, with the same
    parameters.
    """

    _message_name = "GRU"
    _extension_defaults = {"reset_after": True}
    reset_after = True

    def __init__(self, *args, reset_after: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        _check_flag("reset_after", reset_after)
        self.reset_after = reset_after

    def _run(self, input, hx):
        return F.gru(input, hx, *self._stack_arguments(), reset_after=self.reset_after)


class LSTM(_RecurrentStack, torch.nn.LSTM):
    """``torch.nn.LSTM`` (with ``proj_size``) computed by seqkern's fused recurrent op.

    Extra keyword arguments, both default False:

    * ``peephole``: diagonal peephole connections (Gers & Schmidhuber 2000). Adds the
      parameter ``weight_peep_l{k}`` (and ``weight_peep_l{k}_reverse``) of shape (3, H),
      rows (i, f, o): i and f see c_{t-1}, o sees c_t.
    * ``coupled_gates``: coupled input and forget gates (CIFG), i = 1 - f. The gate weights
      and biases have 3H rows, ordered (f, g, o); with ``peephole`` the peephole weight is
      (2, H), rows (f, o).
    """

    _message_name = "LSTM"
    _extension_defaults = {"peephole": False, "coupled_gates": False}
    peephole = False
    coupled_gates = False

    def __init__(self, *args, peephole: bool = False, coupled_gates: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        _check_flag("peephole", peephole)
        _check_flag("coupled_gates", coupled_gates)
        self.peephole = peephole
        self.coupled_gates = coupled_gates
        if peephole or coupled_gates:
            self._build_extended_parameters()

    def _build_extended_parameters(self) -> None:
        """Replace torch's parameters by the extended layout and initialise them like torch."""
        factory = {"device": self.weight_ih_l0.device, "dtype": self.weight_ih_l0.dtype}
        for name in self._flat_weights_names:
            delattr(self, name)
        self._flat_weights_names = []
        self._all_weights = []
        gate_rows = (3 if self.coupled_gates else 4) * self.hidden_size
        out_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        directions = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else out_size * directions
            for direction in range(directions):
                shapes = {"weight_ih": (gate_rows, layer_input), "weight_hh": (gate_rows, out_size)}
                if self.bias:
                    shapes.update(bias_ih=(gate_rows,), bias_hh=(gate_rows,))
                if self.proj_size > 0:
                    shapes["weight_hr"] = (self.proj_size, self.hidden_size)
                if self.peephole:
                    shapes["weight_peep"] = (2 if self.coupled_gates else 3, self.hidden_size)
                suffix = "_reverse" if direction == 1 else ""
                names = [f"{kind}_l{layer}{suffix}" for kind in shapes]
                for name, shape in zip(names, shapes.values()):
                    setattr(self, name, Parameter(torch.empty(shape, **factory)))
                self._all_weights.append(names)
        self._flat_weights_names = [name for names in self._all_weights for name in names]
        self._init_flat_weights()
        self.reset_parameters()

    def _check_packed_dtype(self, data) -> None:
        # torch.nn.LSTM skips check_input for packed input and fails in its first matmul.
        F._check_matmul_dtypes(data, self._flat_weights[0], self.bias)

    def _check_state_dims(self, hx, batched: bool) -> None:
        wanted = 3 if batched else 2
        if hx[0].dim() != wanted or hx[1].dim() != wanted:
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(
                f"For {kind} input, hx and cx should also be {wanted}-D but got "
                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )

    _map_states = staticmethod(_map_state_pair)

    def _run(self, input, hx):
        return F.lstm(input, hx, *self._stack_arguments(), peephole=self.peephole,
                      coupled_gates=self.coupled_gates)


class _Cell(NotScriptable):
    """What seqkern's cells change in torch.nn.RNNCellBase (first in their bases)."""

    _extension_defaults: dict = {}

    def extra_repr(self) -> str:
        return super().extra_repr() + _extension_repr(self)

    def _batch(self, input, hx):
        """torch's cell input rules: 1-D or 2-D input and states; unbatched gets a batch of 1."""
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{self._message_name}: Expected input to be 1D or 2D, got {input.dim()}D instead"
            )
        self._check_state_dims(hx)
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
            if hx is not None:
                hx = self._map_states(hx, lambda state: state.unsqueeze(0))
        return input, hx, batched

    def _check_state_dims(self, hx) -> None:
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(
                f"{self._message_name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead"
            )

    _map_states = staticmethod(_map_state)


class RNNCell(_Cell, torch.nn.RNNCell):
    """``torch.nn.RNNCell`` computed by seqkern's fused recurrent op (one step)."""

    _message_name = "RNNCell"

    def forward(self, input, hx=None):
        input, hx, batched = self._batch(input, hx)
        h = F.rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                       self.nonlinearity)
        return h if batched else h.squeeze(0)


class GRUCell(_Cell, torch.nn.GRUCell):
    """``torch.nn.GRUCell`` computed by seqkern's fused recurrent op (one step).

    Extra keyword argument ``reset_after`` (default True) as for :class:`GRU`.
    """

    _message_name = "GRUCell"
    _extension_defaults = {"reset_after": True}
    reset_after = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 *, reset_after: bool = True):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        _check_flag("reset_after", reset_after)
        self.reset_after = reset_after

    def forward(self, input, hx=None):
        input, hx, batched = self._batch(input, hx)
        h = F.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                       reset_after=self.reset_after)
        return h if batched else h.squeeze(0)


class LSTMCell(_Cell, torch.nn.LSTMCell):
    """``torch.nn.LSTMCell`` computed by seqkern's fused recurrent op (one step).

    Extra keyword arguments as for :class:`LSTM`: ``peephole`` adds the parameter
    ``weight_peep`` of shape (3, H), rows (i, f, o), initialised after torch's parameters;
    ``coupled_gates`` makes the gate weights 3H rows (f, g, o) and the peephole (2, H).
    """

    _message_name = "LSTMCell"
    _extension_defaults = {"peephole": False, "coupled_gates": False}
    peephole = False
    coupled_gates = False

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None,
                 *, peephole: bool = False, coupled_gates: bool = False):
        _check_flag("peephole", peephole)
        _check_flag("coupled_gates", coupled_gates)
        if coupled_gates:
            torch.nn.RNNCellBase.__init__(self, input_size, hidden_size, bias, num_chunks=3,
                                          device=device, dtype=dtype)
        else:
            super().__init__(input_size, hidden_size, bias, device, dtype)
        self.peephole = peephole
        self.coupled_gates = coupled_gates
        if peephole:
            rows = 2 if coupled_gates else 3
            self.weight_peep = Parameter(torch.empty((rows, hidden_size), device=device, dtype=dtype))
            bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0
            init.uniform_(self.weight_peep, -bound, bound)

    def _check_state_dims(self, hx) -> None:
        if hx is None:
            return
        for index, state in enumerate(hx):
            if state.dim() not in (1, 2):
                raise ValueError(
                    f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got {state.dim()}D instead"
                )

    _map_states = staticmethod(_map_state_pair)

    def forward(self, input, hx=None):
        input, hx, batched = self._batch(input, hx)
        h, c = F.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                           w_peep=getattr(self, "weight_peep", None), coupled_gates=self.coupled_gates)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))
