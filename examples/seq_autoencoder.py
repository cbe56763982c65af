"""Sequence autoencoder: an LSTM squeezes a whole sequence into a short code, another LSTM
rebuilds the sequence from the code alone.

The data are sine waves with random amplitude, frequency and phase: three numbers describe
each wave, so a code of three numbers can hold all there is to know about a sequence of
STEPS values (an undercomplete autoencoder, lecture notes 000 and 003). The decoder writes
the sequence backwards, last step first: the steps the encoder read last are the first to
be rebuilt, which makes the task much easier to learn (Srivastava et al., 2015). The loss
is the mean squared reconstruction error; predicting zero everywhere scores the waves'
mean square, about 0.54.

    python examples/seq_autoencoder.py --impl seqkern     # or --impl torch, --epochs, --seed
"""
from __future__ import annotations

import math
import sys
from typing import List, Optional

import torch
import torch.nn.functional as F

from example_common import fit, layers, parse_args

STEPS = 24
CODE = 3
HIDDEN = 32
BATCH = 64
BATCHES_PER_EPOCH = 8
EPOCHS = 30
LEARNING_RATE = 0.01


def sine_waves(count: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """(count, STEPS, 1) waves a sin(w t + phase), a in [0.5, 1.5], w in [0.2, 0.6]."""
    amplitude, frequency, phase = torch.rand(3, count, 1, generator=generator, dtype=torch.float64)
    amplitude, frequency, phase = 0.5 + amplitude, 0.2 + 0.4 * frequency, 2 * math.pi * phase
    time = torch.arange(STEPS, dtype=torch.float64)
    return (amplitude * torch.sin(frequency * time + phase)).unsqueeze(2).to(dtype)


class SequenceAutoencoder(torch.nn.Module):
    def __init__(self, nn, dtype: torch.dtype):
        super().__init__()
        self.encoder = nn.LSTM(1, HIDDEN, batch_first=True, dtype=dtype)
        self.to_code = torch.nn.Linear(HIDDEN, CODE, dtype=dtype)
        self.decoder = nn.LSTM(CODE, HIDDEN, batch_first=True, dtype=dtype)
        self.to_value = torch.nn.Linear(HIDDEN, 1, dtype=dtype)

    def encode(self, waves):
        """waves (B, STEPS, 1) -> code (B, CODE), from the encoder's final hidden state."""
        _, (final_hidden, _) = self.encoder(waves)
        return self.to_code(final_hidden[0])

    def decode(self, code, steps: int):
        """code (B, CODE) -> waves (B, steps, 1); the decoder reads the code at every step."""
        hidden, _ = self.decoder(code.unsqueeze(1).expand(-1, steps, -1))
        return self.to_value(hidden).flip(1)

    def forward(self, waves):
        return self.decode(self.encode(waves), waves.size(1))


def train(impl: str = "seqkern", epochs: int = EPOCHS, seed: int = 0, dtype: torch.dtype = torch.float32,
          log=None):
    """Train from ``seed``; returns (model, loss curve), the mean squared error per epoch."""
    torch.manual_seed(seed)
    model = SequenceAutoencoder(layers(impl), dtype)
    generator = torch.Generator().manual_seed(seed)

    def batches():
        return [sine_waves(BATCH, generator, dtype) for _ in range(BATCHES_PER_EPOCH)]

    def loss_of(waves):
        return F.mse_loss(model(waves), waves)

    curve = fit(model, epochs, batches, loss_of, LEARNING_RATE, log)
    return model, curve


def main(argv: Optional[List[str]] = None) -> List[float]:
    arguments = parse_args(argv, __doc__.splitlines()[0], epochs=EPOCHS)
    print(f"LSTM sequence autoencoder, {STEPS} steps -> {CODE} numbers -> {STEPS} steps, "
          f"layers from {arguments.impl}")
    model, curve = train(arguments.impl, arguments.epochs, arguments.seed, arguments.dtype, log=print)
    unseen = sine_waves(1000, torch.Generator().manual_seed(arguments.seed + 1), arguments.dtype)
    with torch.no_grad():
        error = F.mse_loss(model(unseen), unseen).item()
    print(f"reconstruction error on 1000 new waves: {error:.4f} "
          f"(predicting zero: {unseen.square().mean().item():.4f})")
    return curve


if __name__ == "__main__":
    main(sys.argv[1:])
