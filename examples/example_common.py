"""What the four examples share: their command line, the choice between seqkern's layers
and torch's, and the training loop that prints one loss per epoch."""
from __future__ import annotations

import argparse
from typing import Callable, Iterable, List, Optional

import torch

import seqkern

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def layers(impl: str):
    """The namespace the recurrent layers come from: ``seqkern.nn`` or ``torch.nn``.

    Both provide LSTM, GRU, GRUCell, ... with the same constructors and parameters, so a
    model built from either with the same seed starts from the same weights.
    """
    if impl == "seqkern":
        return seqkern.nn
    if impl == "torch":
        return torch.nn
    raise ValueError(f"impl must be 'seqkern' or 'torch', got {impl!r}")


def parse_args(argv: Optional[List[str]], description: str, epochs: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--impl", choices=("seqkern", "torch"), default="seqkern",
                        help="where the recurrent layers come from (default: seqkern)")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default: {epochs})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data (default: 0)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    arguments = parser.parse_args(argv)
    if arguments.epochs < 1:
        parser.error("--epochs must be at least 1")
    arguments.dtype = DTYPES[arguments.dtype]
    return arguments


def fit(model: torch.nn.Module, epochs: int, batches: Callable[[], Iterable], loss_of: Callable,
        lr: float, log: Optional[Callable[[str], None]] = None) -> List[float]:
    """Adam on ``loss_of(batch)`` for every batch of ``batches()``, once per epoch.

    Returns the mean batch loss of each epoch (the loss curve) and, with ``log``, reports it.
    Gradients are clipped because a recurrent net's first steps can produce large ones.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    curve = []
    for epoch in range(1, epochs + 1):
        model.train()
        batch_losses = []
        for batch in batches():
            optimizer.zero_grad()
            loss = loss_of(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            batch_losses.append(loss.item())
        curve.append(sum(batch_losses) / len(batch_losses))
        if log is not None:
            log(f"epoch {epoch:3d}  loss {curve[-1]:.6f}")
    model.eval()
    return curve
