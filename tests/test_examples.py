"""The examples in examples/ trained with seqkern's layers and with torch.nn's.

From the same seed both must give the same loss curve (in float64, so that the table's
tolerance holds after many optimiser steps), and a short float32 training run with
seqkern's layers must reach a loss that only a model which learnt the task reaches.
"""
import importlib
import math
import sys
from pathlib import Path

import pytest
import torch

import seqkern
from nn_support import require_backend
from support import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

SEED = 3

# example -> (epochs, loss it must end below, why that loss takes a working model)
THRESHOLD_RUNS = {
    "char_lm": (10, 0.5, "a model that sees only the current character scores 0.888, the "
                          "uniform guess log(15) = 2.708"),
    "seq2seq_reverse": (12, 0.7, "ignoring the input scores log(10) = 2.303; knowing three of "
                                 "the five digits at best 0.921"),
    "packed_classifier": (8, 0.2, "a coin toss scores log(2) = 0.693"),
    "seq_autoencoder": (20, 0.2, "predicting zero scores about 0.54, the waves' mean square"),
}
EXAMPLES = tuple(THRESHOLD_RUNS)
COMPARISON_EPOCHS = 2


@pytest.fixture(autouse=True)
def default_backend_with_one_thread():
    """Runs on the backend seqkern picks for CPU tensors, on one thread: the examples' ops
    are so small that threads sharing a busy machine wait on each other longer than they
    compute."""
    require_backend(seqkern.backend_for(torch.device("cpu")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", EXAMPLES)
def test_same_loss_curve_as_torch(name, capsys):
    example = importlib.import_module(name)
    arguments = ["--epochs", str(COMPARISON_EPOCHS), "--seed", str(SEED), "--dtype", "float64"]
    torch_curve = example.main(["--impl", "torch", *arguments])
    seqkern_curve = example.main(["--impl", "seqkern", *arguments])
    assert len(seqkern_curve) == COMPARISON_EPOCHS
    assert_close(torch.tensor(seqkern_curve), torch.tensor(torch_curve), dtype=torch.float64)
    printed = capsys.readouterr().out
    assert printed.count(f"epoch   {COMPARISON_EPOCHS}  loss ") == 2


@pytest.mark.parametrize("name", EXAMPLES)
def test_training_reaches_a_loss_only_a_working_model_reaches(name):
    example = importlib.import_module(name)
    epochs, threshold, baseline = THRESHOLD_RUNS[name]
    _, curve = example.train("seqkern", epochs, seed=SEED, dtype=torch.float32)
    assert all(math.isfinite(loss) for loss in curve)
    assert curve[-1] < threshold, f"{name}: final loss {curve[-1]:.4f} not below {threshold} ({baseline})"


def test_unknown_implementation_is_refused():
    example = importlib.import_module("char_lm")
    with pytest.raises(SystemExit):
        example.main(["--impl", "tensorflow"])
    with pytest.raises(ValueError, match="impl must be 'seqkern' or 'torch'"):
        example.train("tensorflow", 1)
