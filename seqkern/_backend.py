"""The one place where a backend is chosen.

By tensor device: CUDA -> Triton, CPU -> C++. ``SEQKERN_BACKEND=cpp|triton|reference``
overrides the choice and raises if that backend cannot run on the given device. The
NumPy reference is an oracle for tests and benchmarks; it is only used when asked for.

Each backend provides, per op family, functions with the same names and arguments:
  cpp        -> the compiled extension ``seqkern._C``
  triton     -> ``seqkern.kernels.<family>`` (Triton kernels and their launchers)
  reference  -> ``seqkern.ops._reference_backend`` (NumPy, via tensor <-> array adapters)
"""
from __future__ import annotations

import importlib
import os

import torch

BACKENDS = ("cpp", "triton", "reference")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here; the message says what to install or set."""


def _triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load_cpp():
    try:
        return importlib.import_module("seqkern._C")
    except ImportError as error:
        raise BackendUnavailableError(
            "the seqkern C++ extension (seqkern._C) is not built: run "
            "`pip install --no-build-isolation -e .` in the seqkern checkout "
            f"(import failed with: {error})"
        ) from error


def extension_missing(error: BackendUnavailableError):
    """A stand-in for the ops of seqkern._C when it failed to load: calling it says how to build it."""

    def missing(*args, **kwargs):
        raise BackendUnavailableError(str(error)) from error

    return missing


def _load_triton(family: str):
    try:
        importlib.import_module("triton")
    except ImportError as error:
        raise BackendUnavailableError(
            "the Triton backend needs the `triton` package: `pip install triton`"
        ) from error
    return importlib.import_module(f"seqkern.kernels.{family}")


def backend_for(device: torch.device) -> str:
    """Name of the backend that runs ops on tensors living on ``device``."""
    device = torch.device(device)
    override = os.environ.get("SEQKERN_BACKEND", "").strip().lower()
    if override:
        if override not in BACKENDS:
            raise BackendUnavailableError(
                f"SEQKERN_BACKEND={override!r} is not a backend; choose one of {', '.join(BACKENDS)}"
            )
        if override == "cpp" and device.type != "cpu":
            raise BackendUnavailableError(
                f"SEQKERN_BACKEND=cpp runs on CPU tensors only, got a tensor on {device}"
            )
        if override == "triton" and device.type != "cuda" and not (
            device.type == "cpu" and _triton_interpreter_enabled()
        ):
            raise BackendUnavailableError(
                f"SEQKERN_BACKEND=triton needs CUDA tensors (got {device}); on CPU tensors it "
                "runs only under the Triton interpreter (set TRITON_INTERPRET=1 before importing seqkern)"
            )
        return override
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu":
        return "cpp"
    raise BackendUnavailableError(f"seqkern has no backend for tensors on {device}")


def implementation(family: str, name: str, device: torch.device):
    """The function ``name`` of op family ``family`` from the backend for ``device``."""
    backend = backend_for(device)
    if backend == "cpp":
        module = load_cpp()
    elif backend == "triton":
        module = _load_triton(family)
    else:
        module = importlib.import_module("seqkern.ops._reference_backend")
    function = getattr(module, name, None)
    if function is None:
        raise BackendUnavailableError(
            f"the {backend} backend does not implement {family}.{name} yet"
        )
    return function
