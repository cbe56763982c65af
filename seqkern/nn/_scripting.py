"""torch.jit.script of a seqkern module: a clear error instead of TorchScript's parse failure.

A seqkern module's forward is Python (torch's argument checks, packed input, the seed
extensions) around torch.library ops, which TorchScript cannot compile. torch deprecates
TorchScript in favour of torch.compile and torch.export, and both take these modules
whole (README, "torch.compile and torch.export"); torch.jit.trace records the ops too.
"""


class NotScriptable:
    """First in a seqkern module's bases: torch.jit.script calls __prepare_scriptable__ on
    every module of a model before it compiles any, so the model fails here, naming the layer."""

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"seqkern.nn.{type(self).__name__} cannot be compiled by TorchScript (torch.jit.script): "
            "its forward is Python around seqkern's torch.library ops. Use torch.compile or "
            "torch.export, which run those ops in a graph, or torch.jit.trace, which records them."
        )
