"""CPU speed options of the training library (`--cpu_kernels`, on in the CPU presets): what makes a training step
fast on a CPU without changing the model file or what a saved model carries.

- `CPUDropout`: dropout whose keep mask is drawn from 16-bit halves of 64-bit random words, one draw of PyTorch's
  CPU generator for every four elements: PyTorch's per-element Bernoulli draw is the slowest kernel of a CPU step.
  `use_cpu_kernels` gives every `nn.Dropout` of a model this forward (the module's class changes; its state dict
  and `save_pretrained` output do not).
- The row-blocked label-smoothed loss is `vaswani_transformer.training.criterion` (`blocked=True`).
- Keeping freed memory in glibc's heap is `vaswani_transformer.training.allocator`.

Deviation from the paper (P_drop itself): with `CPUDropout` the drop probability is rounded to a multiple of 2^-16
(0.1 becomes 0.100006); F.dropout draws it exactly. Measurements: `docs/performance.md`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


__all__ = ["CPUDropout", "dropout", "use_cpu_kernels"]

# Levels of the uniform draw that decides each element: 16-bit lanes of 64-bit random words.
DROPOUT_LEVELS = 1 << 16


def dropout(input: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """§5.4 dropout (Srivastava et al. 2014, "inverted" as `torch.nn.functional.dropout`): zero each element with
    probability `p` (rounded to a multiple of 2^-16) and scale the rest by 1 / (1 - p); the identity when not
    training or `p` is 0.

    On CPU the keep mask comes from `DROPOUT_LEVELS`-level uniforms and is applied as a product with a 1.0 / 0.0
    tensor of `input`'s dtype, which backward keeps (a same-dtype product is much faster than a boolean
    `masked_fill` on CPU); a dropped element is 0 times its input (-0.0 for a negative one, NaN for an infinite one).
    Other devices, `p == 1` and code under `torch.compile` use `F.dropout`.

    Args:
        input: any shape; p: drop probability in [0, 1]; training: dropout is applied only when True.
    Returns:
        a tensor of `input`'s shape and dtype.
    Raises:
        ValueError: if `p` is outside [0, 1].
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if input.device.type != "cpu" or p == 1.0 or torch.compiler.is_compiling():
        return F.dropout(input, p=p, training=True)
    count = input.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # every 64-bit value alike
    uniform = words.view(torch.int16)[:count].view(input.shape)  # uniform on [-2^15, 2^15)
    # The keep mask as 1.0 / 0.0 in input's dtype, written by the comparison itself (probability of 0.0:
    # round(p * 2^16) / 2^16); autograd saves it for backward (grad * keep * scale).
    keep = torch.ge(
        uniform, round(p * DROPOUT_LEVELS) - DROPOUT_LEVELS // 2, out=torch.empty_like(uniform, dtype=input.dtype)
    )
    return (input * keep).mul_(1.0 / (1.0 - p))


class CPUDropout(nn.Dropout):
    """`nn.Dropout` computed by `dropout` above. Same attributes (`p`, `inplace` is ignored), same state dict."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout(input, self.p, self.training)


def use_cpu_kernels(model: nn.Module) -> nn.Module:
    """Give every `nn.Dropout` of `model` the `CPUDropout` forward (in place) and return `model`.

    Covers the dropout on embeddings plus positional encodings, on each sub-layer output and inside the
    feed-forward network (§5.4). Attention-weight dropout stays inside the attention function chosen by
    `attn_implementation`. Nothing is saved with the model: `save_pretrained` writes the same files, and a model
    loaded from them uses `nn.Dropout`.
    """
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = CPUDropout
    return model
