"""Triton GPU kernels, shipped as seqkern.kernels (one module per op family)."""
