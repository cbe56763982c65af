"""Sequence-to-vector classification of variable-length sequences with a PackedSequence.

The "movie review" pattern of the lecture notes: an LSTM reads a whole sequence and its
final state alone decides the class. Here the sequences are digit strings of different
lengths and the class says whether the motif 1, 2, 3 occurs in them. The batch is padded
to its longest sequence and packed with ``pack_padded_sequence(..., enforce_sorted=False)``
so the LSTM stops at each sequence's own end: its final state never sees the padding.

    python examples/packed_classifier.py --impl seqkern     # or --impl torch, --epochs, --seed
"""
from __future__ import annotations

import math
import sys
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from example_common import fit, layers, parse_args

DIGITS = 10
MOTIF = torch.tensor([1, 2, 3])
SHORTEST, LONGEST = 3, 12
EMBEDDING = 8
HIDDEN = 32
BATCH = 64
BATCHES_PER_EPOCH = 8
EPOCHS = 15
LEARNING_RATE = 0.01


def contains_motif(digits: torch.Tensor) -> bool:
    windows = digits.unfold(0, len(MOTIF), 1)
    return bool((windows == MOTIF).all(dim=1).any())


def labelled_sequences(count: int, generator: torch.Generator):
    """``count`` digit strings, half with the motif at a random place and half without it.

    Returns padded digits (count, LONGEST), lengths (count,) and labels (count,) in {0, 1}.
    """
    padded = torch.zeros(count, LONGEST, dtype=torch.int64)
    lengths = torch.randint(SHORTEST, LONGEST + 1, (count,), generator=generator)
    labels = torch.arange(count) % 2
    for row, (length, label) in enumerate(zip(lengths.tolist(), labels.tolist())):
        digits = torch.randint(0, DIGITS, (length,), generator=generator)
        while contains_motif(digits):
            digits = torch.randint(0, DIGITS, (length,), generator=generator)
        if label == 1:
            start = torch.randint(0, length - len(MOTIF) + 1, (), generator=generator).item()
            digits[start:start + len(MOTIF)] = MOTIF
        padded[row, :length] = digits
    return padded, lengths, labels


class MotifClassifier(torch.nn.Module):
    def __init__(self, nn, dtype: torch.dtype):
        super().__init__()
        self.embedding = torch.nn.Embedding(DIGITS, EMBEDDING, dtype=dtype)
        self.lstm = nn.LSTM(EMBEDDING, HIDDEN, batch_first=True, dtype=dtype)
        self.head = torch.nn.Linear(HIDDEN, 1, dtype=dtype)

    def forward(self, padded, lengths):
        """padded (B, LONGEST) digits, lengths (B,) -> logit (B,) of "contains the motif"."""
        packed = pack_padded_sequence(self.embedding(padded), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, (final_hidden, _) = self.lstm(packed)  # (1, B, HIDDEN), in the caller's batch order
        return self.head(final_hidden[0]).squeeze(1)


def train(impl: str = "seqkern", epochs: int = EPOCHS, seed: int = 0, dtype: torch.dtype = torch.float32,
          log=None):
    """Train from ``seed``; returns (model, loss curve), the mean binary cross-entropy per epoch."""
    torch.manual_seed(seed)
    model = MotifClassifier(layers(impl), dtype)
    generator = torch.Generator().manual_seed(seed)

    def batches():
        return [labelled_sequences(BATCH, generator) for _ in range(BATCHES_PER_EPOCH)]

    def loss_of(batch):
        padded, lengths, labels = batch
        return F.binary_cross_entropy_with_logits(model(padded, lengths), labels.to(dtype))

    curve = fit(model, epochs, batches, loss_of, LEARNING_RATE, log)
    return model, curve


@torch.no_grad()
def accuracy(model: MotifClassifier, batch: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
    padded, lengths, labels = batch
    return ((model(padded, lengths) > 0).long() == labels).double().mean().item()


def main(argv: Optional[List[str]] = None) -> List[float]:
    arguments = parse_args(argv, __doc__.splitlines()[0], epochs=EPOCHS)
    print(f"does the digit string contain 1 2 3? packed LSTM from {arguments.impl} "
          f"(coin toss: loss {math.log(2):.3f})")
    model, curve = train(arguments.impl, arguments.epochs, arguments.seed, arguments.dtype, log=print)
    unseen = labelled_sequences(1000, torch.Generator().manual_seed(arguments.seed + 1))
    print(f"accuracy on 1000 new strings of length {SHORTEST} to {LONGEST}: {accuracy(model, unseen):.1%}")
    return curve


if __name__ == "__main__":
    main(sys.argv[1:])
