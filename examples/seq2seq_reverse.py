"""Encoder-decoder (seq2seq) with teacher forcing: learn to reverse a string of digits.

A bidirectional GRU encoder reads the digits and its two final states become the context,
the decoder's first state. A GRU cell decoder then writes the reversed string one digit at
a time. In training it is fed the true previous digit (teacher forcing); when used it is
fed its own previous prediction.

    python examples/seq2seq_reverse.py --impl seqkern     # or --impl torch, --epochs, --seed
"""
from __future__ import annotations

import math
import sys
from typing import List, Optional

import torch
import torch.nn.functional as F

from example_common import fit, layers, parse_args

DIGITS = 10
START = DIGITS  # the decoder's input before the first digit
LENGTH = 5
EMBEDDING = 16
HIDDEN = 64
BATCH = 64
BATCHES_PER_EPOCH = 8
EPOCHS = 30
LEARNING_RATE = 0.005


class Reverser(torch.nn.Module):
    def __init__(self, nn, dtype: torch.dtype):
        super().__init__()
        self.encoder_embedding = torch.nn.Embedding(DIGITS, EMBEDDING, dtype=dtype)
        self.encoder = nn.GRU(EMBEDDING, HIDDEN, batch_first=True, bidirectional=True, dtype=dtype)
        self.context = torch.nn.Linear(2 * HIDDEN, HIDDEN, dtype=dtype)
        self.decoder_embedding = torch.nn.Embedding(DIGITS + 1, EMBEDDING, dtype=dtype)
        self.decoder = nn.GRUCell(EMBEDDING, HIDDEN, dtype=dtype)
        self.head = torch.nn.Linear(HIDDEN, DIGITS, dtype=dtype)

    def forward(self, source, target=None):
        """source (B, LENGTH) digits -> logits (B, LENGTH, DIGITS) of the output digits.

        With ``target`` (B, LENGTH) the decoder is teacher-forced: step t reads target[:, t-1].
        """
        _, final_states = self.encoder(self.encoder_embedding(source))  # (2, B, HIDDEN)
        hidden = torch.tanh(self.context(torch.cat([final_states[0], final_states[1]], dim=1)))
        previous = torch.full_like(source[:, 0], START)
        logits = []
        for step in range(source.size(1)):
            hidden = self.decoder(self.decoder_embedding(previous), hidden)
            logits.append(self.head(hidden))
            previous = target[:, step] if target is not None else logits[-1].argmax(dim=1)
        return torch.stack(logits, dim=1)


def digit_strings(count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, DIGITS, (count, LENGTH), generator=generator)


def train(impl: str = "seqkern", epochs: int = EPOCHS, seed: int = 0, dtype: torch.dtype = torch.float32,
          log=None):
    """Train from ``seed``; returns (model, loss curve), the mean cross-entropy per epoch."""
    torch.manual_seed(seed)
    model = Reverser(layers(impl), dtype)
    generator = torch.Generator().manual_seed(seed)

    def batches():
        return [digit_strings(BATCH, generator) for _ in range(BATCHES_PER_EPOCH)]

    def loss_of(source):
        target = source.flip(1)
        logits = model(source, target)
        return F.cross_entropy(logits.reshape(-1, DIGITS), target.reshape(-1))

    curve = fit(model, epochs, batches, loss_of, LEARNING_RATE, log)
    return model, curve


@torch.no_grad()
def exact_match_rate(model: Reverser, source: torch.Tensor) -> float:
    """Share of strings whose reversal the free-running decoder writes without a mistake."""
    predicted = model(source).argmax(dim=2)
    return (predicted == source.flip(1)).all(dim=1).double().mean().item()


def main(argv: Optional[List[str]] = None) -> List[float]:
    arguments = parse_args(argv, __doc__.splitlines()[0], epochs=EPOCHS)
    print(f"seq2seq digit reversal, bidirectional GRU encoder and GRU cell decoder from "
          f"{arguments.impl} (uniform guess: loss {math.log(DIGITS):.3f})")
    model, curve = train(arguments.impl, arguments.epochs, arguments.seed, arguments.dtype, log=print)
    unseen = digit_strings(500, torch.Generator().manual_seed(arguments.seed + 1))
    print(f"reversed without teacher forcing, exact match on 500 new strings: "
          f"{exact_match_rate(model, unseen):.1%}")
    with torch.no_grad():
        outputs = model(unseen[:3]).argmax(dim=2)
    for digits, output in zip(unseen[:3], outputs):
        print("  " + "".join(map(str, digits.tolist())) + " -> " + "".join(map(str, output.tolist())))
    return curve


if __name__ == "__main__":
    main(sys.argv[1:])
