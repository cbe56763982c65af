"""seqkern.convert swaps torch.nn recurrent layers for seqkern's, sharing their parameters,
and the converted model computes and trains like the original."""
import copy

import pytest
import torch

import seqkern
from nn_support import backend  # noqa: F401
from seqkern.convert import CONVERSIONS, register_conversion
from support import Inputs, assert_close

VOCABULARY, EMBEDDING, HIDDEN, TAGS = 11, 7, 13, 5


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCABULARY, EMBEDDING)
        self.lstm = torch.nn.LSTM(EMBEDDING, HIDDEN, 2, bidirectional=True, batch_first=True)
        self.linear = torch.nn.Linear(2 * HIDDEN, TAGS)

    def forward(self, tokens):
        return self.linear(self.lstm(self.embedding(tokens))[0])


def tagger(seed=5):
    torch.manual_seed(seed)
    return Tagger().double()


def tokens_and_tags(inputs, batch=3, steps=6):
    tokens = torch.randint(0, VOCABULARY, (batch, steps), generator=inputs.generator)
    tags = torch.randint(0, TAGS, (batch, steps), generator=inputs.generator)
    return tokens, tags


def test_convert_keeps_outputs_and_trains_like_torch(backend):
    inputs = Inputs()
    original = tagger()
    model = copy.deepcopy(original)
    parameters = list(model.parameters())
    converted = seqkern.convert(model)
    assert converted is model
    assert type(model.lstm) is seqkern.nn.LSTM
    assert all(a is b for a, b in zip(model.parameters(), parameters))
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (original, model)]
    for _ in range(3):
        tokens, tags = tokens_and_tags(inputs)
        losses = []
        for module, optimizer in zip((original, model), optimizers):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(tokens).reshape(-1, TAGS), tags.reshape(-1))
            loss.backward()
            optimizer.step()
            losses.append(loss)
        assert_close(losses[1], losses[0])
    assert losses[0].item() != pytest.approx(0.0)
    for (name, value), expected in zip(model.named_parameters(), original.parameters()):
        assert_close(value, expected, msg=lambda text, name=name: f"{name}: {text}")


def test_convert_not_inplace_leaves_the_model_alone():
    original = tagger()
    converted = seqkern.convert(original, inplace=False)
    assert type(original.lstm) is torch.nn.LSTM
    assert type(converted.lstm) is seqkern.nn.LSTM
    for value, expected in zip(converted.parameters(), original.parameters()):
        assert value is not expected and torch.equal(value, expected)


def test_convert_keeps_mode_dtype_hooks_and_settings():
    model = tagger()
    model.lstm.eval()
    model.lstm.dropout = 0.25
    hook = model.lstm.register_forward_hook(lambda module, args, output: None)
    seqkern.convert(model)
    assert model.training and not model.lstm.training
    assert model.lstm.dropout == 0.25 and model.lstm.bidirectional and model.lstm.batch_first
    assert all(p.dtype == torch.float64 for p in model.lstm.parameters())
    assert model.lstm.peephole is False and model.lstm.coupled_gates is False
    assert repr(model.lstm) == "LSTM(7, 13, num_layers=2, batch_first=True, dropout=0.25, bidirectional=True)"
    assert list(model.lstm._forward_hooks) == [hook.id]
    model.lstm.train()
    assert model.lstm.training and model.training


def test_convert_every_recurrent_class_shared_root_and_subclass():
    class MyLSTM(torch.nn.LSTM):
        pass

    shared = torch.nn.GRU(3, 4)
    model = torch.nn.ModuleDict({
        "first": shared, "second": shared,
        "cells": torch.nn.ModuleList([torch.nn.RNNCell(3, 4), torch.nn.LSTMCell(3, 4), torch.nn.GRUCell(3, 4)]),
        "rnn": torch.nn.RNN(3, 4, nonlinearity="relu"),
        "custom": MyLSTM(3, 4),
        "already": seqkern.nn.LSTM(3, 4),
    })
    already = model["already"]
    seqkern.convert(model)
    assert type(model["first"]) is seqkern.nn.GRU and model["first"] is model["second"]
    assert [type(c) for c in model["cells"]] == [seqkern.nn.RNNCell, seqkern.nn.LSTMCell, seqkern.nn.GRUCell]
    assert type(model["rnn"]) is seqkern.nn.RNN and model["rnn"].mode == "RNN_RELU"
    assert type(model["custom"]) is MyLSTM
    assert model["already"] is already
    root = torch.nn.LSTM(3, 4)
    converted_root = seqkern.convert(root)
    assert type(converted_root) is seqkern.nn.LSTM
    assert converted_root.weight_ih_l0 is root.weight_ih_l0


def test_register_conversion(monkeypatch):
    class SeqkernIdentity(torch.nn.Identity):
        pass

    with pytest.raises(TypeError, match="must subclass Identity"):
        register_conversion(torch.nn.Identity, seqkern.nn.LSTM)
    # Registered for this test only: monkeypatch removes the entry afterwards.
    monkeypatch.setitem(CONVERSIONS, torch.nn.Identity, None)
    register_conversion(torch.nn.Identity, SeqkernIdentity)
    model = seqkern.convert(torch.nn.Sequential(torch.nn.Identity()))
    assert type(model[0]) is SeqkernIdentity
