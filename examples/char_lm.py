"""Character-level language model, the "hello" example of the lecture notes.

An LSTM reads a text one character at a time, each character a one-hot vector, and learns
the probability of the next character given the ones before. After training it writes new
text by sampling from its own predictions, one character at a time.

    python examples/char_lm.py --impl seqkern     # or --impl torch, --epochs, --seed
"""
from __future__ import annotations

import math
import sys
from typing import List, Optional

import torch
import torch.nn.functional as F

from example_common import fit, layers, parse_args

TEXT = "hello world. hello there. hello lstm. help the yellow fellow. "
ALPHABET = sorted(set(TEXT))
WINDOW = 16
BATCH = 8
HIDDEN = 32
EPOCHS = 30
LEARNING_RATE = 0.02


def encode(text: str) -> torch.Tensor:
    return torch.tensor([ALPHABET.index(char) for char in text])


class CharLanguageModel(torch.nn.Module):
    def __init__(self, nn, dtype: torch.dtype):
        super().__init__()
        self.lstm = nn.LSTM(len(ALPHABET), HIDDEN, batch_first=True, dtype=dtype)
        self.head = torch.nn.Linear(HIDDEN, len(ALPHABET), dtype=dtype)

    def forward(self, characters, state=None):
        """characters (B, T) indices -> next-character logits (B, T, V) and the LSTM state."""
        one_hot = F.one_hot(characters, len(ALPHABET)).to(self.head.weight.dtype)
        hidden, state = self.lstm(one_hot, state)
        return self.head(hidden), state


def windows(generator: torch.Generator) -> List[torch.Tensor]:
    """Every WINDOW+1 characters long slice of the (cyclic) text, in shuffled batches."""
    cyclic = encode(TEXT * 2)
    starts = torch.randperm(len(TEXT), generator=generator)
    slices = torch.stack([cyclic[start:start + WINDOW + 1] for start in starts.tolist()])
    return list(slices.split(BATCH))


def train(impl: str = "seqkern", epochs: int = EPOCHS, seed: int = 0, dtype: torch.dtype = torch.float32,
          log=None):
    """Train from ``seed``; returns (model, loss curve), the mean cross-entropy per epoch."""
    torch.manual_seed(seed)
    model = CharLanguageModel(layers(impl), dtype)
    generator = torch.Generator().manual_seed(seed)

    def loss_of(batch):
        logits, _ = model(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, len(ALPHABET)), batch[:, 1:].reshape(-1))

    curve = fit(model, epochs, lambda: windows(generator), loss_of, LEARNING_RATE, log)
    return model, curve


@torch.no_grad()
def sample(model: CharLanguageModel, prompt: str, length: int, generator: torch.Generator) -> str:
    """Continue ``prompt`` by drawing each next character from the model's prediction."""
    logits, state = model(encode(prompt).unsqueeze(0))
    text = prompt
    for _ in range(length):
        probabilities = torch.softmax(logits[0, -1].double(), dim=0)
        character = torch.multinomial(probabilities, 1, generator=generator)
        text += ALPHABET[character.item()]
        logits, state = model(character.view(1, 1), state)
    return text


def main(argv: Optional[List[str]] = None) -> List[float]:
    arguments = parse_args(argv, __doc__.splitlines()[0], epochs=EPOCHS)
    print(f"char-level LSTM language model, layers from {arguments.impl}, "
          f"{len(ALPHABET)} characters (uniform guess: loss {math.log(len(ALPHABET)):.3f})")
    model, curve = train(arguments.impl, arguments.epochs, arguments.seed, arguments.dtype, log=print)
    generator = torch.Generator().manual_seed(arguments.seed)
    print("sampled text:", repr(sample(model, "hel", 60, generator)))
    return curve


if __name__ == "__main__":
    main(sys.argv[1:])
