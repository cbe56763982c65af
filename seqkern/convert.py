"""``seqkern.convert(model)``: swap the torch.nn layers of a model for seqkern's drop-ins.

``CONVERSIONS`` maps a torch.nn class to the seqkern class that replaces it; other op
families add their layers with ``register_conversion``. Only exact types are swapped: a
user's subclass of ``torch.nn.LSTM`` may override ``forward`` and is left alone.
"""
from __future__ import annotations

import copy

import torch

from . import nn as _seqkern_nn

__all__ = ["convert", "register_conversion", "CONVERSIONS"]

CONVERSIONS: dict = {
    torch.nn.RNN: _seqkern_nn.RNN,
    torch.nn.LSTM: _seqkern_nn.LSTM,
    torch.nn.GRU: _seqkern_nn.GRU,
    torch.nn.RNNCell: _seqkern_nn.RNNCell,
    torch.nn.LSTMCell: _seqkern_nn.LSTMCell,
    torch.nn.GRUCell: _seqkern_nn.GRUCell,
    torch.nn.MaxPool1d: _seqkern_nn.MaxPool1d,
    torch.nn.MaxPool2d: _seqkern_nn.MaxPool2d,
    torch.nn.MaxPool3d: _seqkern_nn.MaxPool3d,
}


def register_conversion(torch_class: type, seqkern_class: type) -> None:
    """Make ``convert`` swap ``torch_class`` for ``seqkern_class``, a subclass of it whose
    extra attributes (if any) have class-level defaults."""
    if not issubclass(seqkern_class, torch_class):
        raise TypeError(f"{seqkern_class.__name__} must subclass {torch_class.__name__} to replace it")
    CONVERSIONS[torch_class] = seqkern_class


def _share_state(module: torch.nn.Module, seqkern_class: type) -> torch.nn.Module:
    """A ``seqkern_class`` instance holding the same Parameter and buffer objects, hooks,
    training flag and settings as ``module``; nothing is re-initialised or copied to a new
    device or dtype. The containers are copied so the two modules can diverge later."""
    replacement = seqkern_class.__new__(seqkern_class)
    for key, value in module.__dict__.items():
        replacement.__dict__[key] = copy.copy(value) if isinstance(value, (dict, list)) else value
    return replacement


def convert(model: torch.nn.Module, inplace: bool = True) -> torch.nn.Module:
    """Replace every torch.nn layer listed in ``CONVERSIONS`` inside ``model`` by its seqkern
    counterpart sharing the same parameters; returns the model.

    With ``inplace=False`` the model is deep-copied first and the original is untouched. When
    ``model`` itself is such a layer, the returned module is its replacement. A layer used at
    several places in the model is replaced by one shared seqkern layer.
    """
    if not inplace:
        model = copy.deepcopy(model)
    replaced: dict = {}

    def replace(module: torch.nn.Module) -> torch.nn.Module:
        if id(module) in replaced:
            return replaced[id(module)]
        seqkern_class = CONVERSIONS.get(type(module))
        result = module if seqkern_class is None else _share_state(module, seqkern_class)
        replaced[id(module)] = result
        for name, child in list(result._modules.items()):
            if child is not None:
                result._modules[name] = replace(child)
        return result

    return replace(model)
