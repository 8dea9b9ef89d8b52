"""A training step made for accelerators (`--torch_compile`): the forward, the §5.4 loss and, through AOTAutograd,
the backward compiled together by `torch.compile`, for every batch shape at once.

- What is compiled is the criterion's `criterion(model, batch)` (`training.criterion`), not the model's `forward`:
  the loss joins the graph (its casts, softmax and reductions over the vocabulary can fuse into few kernels), and
  evaluation and `generate()` keep running the model eagerly (decoding one token at a time with a growing cache
  would compile a graph per length). The model, its state-dict keys and what it saves are unchanged.
- Shapes: `dynamic=True` makes the batch and length dimensions of the batch's tensors symbolic from the first
  compilation on; the parameters stay static. Batch lengths are padded to a multiple of `--pad_to_multiple_of` (8 by
  default), so every batch of the training sampler runs the one graph. One exception: PyTorch specialises a
  dimension of size 1, so a batch of one sentence (a sentence longer than half the token budget) compiles one more
  graph, once.
- No graph break in the model or the loss: `graph_breaks` lists them (`torch._dynamo.explain`), and the tests run it
  on a small model with the default loss and with `output_chunks`. The row-blocked CPU loss (`blocked=True`) is not
  compilable (a Python loop over a data-dependent number of blocks and a host read in its backward), so
  `compile_criterion` refuses it.

Measurements and how to run the GPU check: `docs/performance.md`.
"""

from __future__ import annotations

import time

import torch
from torch._dynamo.utils import counters

from vaswani_transformer.training.criterion import LabelSmoothedCrossEntropyCriterion


__all__ = ["CompiledCriterion", "compile_criterion", "compiled_graphs", "graph_breaks"]


class CompiledCriterion:
    """`criterion(model, batch)` through `torch.compile`: forward, loss and backward (AOTAutograd) as one graph.

    Drop-in for `LabelSmoothedCrossEntropyCriterion` in the training loop (`loss = criterion(model, batch)`;
    `loss.backward()` runs the compiled backward). The first call compiles (its wall time is `compile_seconds`);
    later calls with any batch and length run the same graph (see the module docstring).

    Args:
        criterion: the loss to compile (not `blocked`).
        backend, mode: `torch.compile`'s (inductor and its default mode; "reduce-overhead" would record a CUDA graph
            per batch shape, so it is not the default with the sampler's many shapes).
        dynamic: `torch.compile`'s `dynamic` (True: symbolic batch and length dimensions from the first call).
    """

    def __init__(
        self,
        criterion: LabelSmoothedCrossEntropyCriterion,
        backend: str | object = "inductor",
        mode: str | None = None,
        dynamic: bool | None = True,
    ):
        self.criterion = criterion
        self.epsilon = criterion.epsilon
        self.compiled = torch.compile(criterion.__call__, backend=backend, mode=mode, dynamic=dynamic)
        self.compile_seconds: float | None = None

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The eager criterion's `loss` of given logits (not compiled; for callers that hold logits already)."""
        return self.criterion.loss(logits, labels)

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The compiled `criterion(model, batch)`: a scalar fp32 loss whose backward is compiled too.

        Raises:
            KeyError: if `batch` has no `labels` (from the criterion, raised while tracing).
        """
        if self.compile_seconds is not None:
            return self.compiled(model, batch)
        start = time.perf_counter()
        loss = self.compiled(model, batch)
        self.compile_seconds = time.perf_counter() - start  # tracing and compiling the forward (backward: lazily)
        return loss


def compile_criterion(
    criterion: LabelSmoothedCrossEntropyCriterion, backend: str | object = "inductor", mode: str | None = None
) -> CompiledCriterion:
    """The compiled training step's loss (`CompiledCriterion`, dynamic shapes): what `--torch_compile` trains with.

    Raises:
        ValueError: for a `blocked` criterion (its loop over blocks and host read break the graph; the CPU presets'
            `cpu_kernels` choose it, so a compiled run takes the default loss instead).
    """
    if criterion.blocked:
        raise ValueError("the row-blocked loss (blocked=True, --cpu_kernels) does not compile: use blocked=False")
    return CompiledCriterion(criterion, backend=backend, mode=mode)


def graph_breaks(criterion: LabelSmoothedCrossEntropyCriterion, model: torch.nn.Module, batch: dict) -> list[str]:
    """Every graph break of `criterion(model, batch)` under `torch.compile`, as "reason (file:line)" (an empty list:
    one graph). Runs the criterion once through `torch._dynamo.explain`, which traces without compiling; the model
    runs in its current mode (`model.train()` for a training step)."""
    explained = torch._dynamo.explain(criterion)(model, batch)
    breaks = []
    for reason in explained.break_reasons:
        where = reason.user_stack[-1] if reason.user_stack else None
        place = f" ({where.filename}:{where.lineno})" if where is not None else ""
        breaks.append(reason.reason.splitlines()[0] + place)
    return breaks


def compiled_graphs() -> int:
    """How many graphs `torch.compile` has compiled in this process so far (dynamo's `unique_graphs` counter): a
    difference between two calls counts the compilations in between, recompilations included."""
    return counters["stats"]["unique_graphs"]
