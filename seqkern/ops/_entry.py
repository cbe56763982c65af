"""Which entry point an eager call of a seqkern op takes.

torch.ops.seqkern.<op> parses its Python arguments into a boxed call, about 2 us before the
dispatcher sees it: more than a small pool's kernel, a fifth of a cell step. seqkern._C has
an entry point per op that makes the same dispatcher call from typed arguments (csrc/
pooling_op.cpp, recurrent_op.cpp), so autograd, functorch, tracing, Python modes and the
backend choice all happen as they do below torch.ops. What it skips is what torch.ops does
in Python: __torch_function__ (tensor subclasses and modes) and being traced by Dynamo.
"""
import torch


def op_entry(registered, direct, tensors):
    """``direct`` unless ``registered`` (the torch.ops overload) has work of its own to do for
    ``tensors`` (the call's tensor arguments, None for absent ones)."""
    if torch.compiler.is_compiling() or torch._C._has_torch_function(tensors):
        return registered
    return direct
