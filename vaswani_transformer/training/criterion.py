"""§5.4 label smoothing as a training criterion: the loss the training loop minimises, outside the model.

The model's own `forward(labels=...)` computes the same loss the standard way (`F.cross_entropy(...,
label_smoothing=eps)`), which is what a Hub user gets. Training computes it here instead, as fairseq's criterion
does: the loop calls `criterion(model, batch)`, so a faster loss never changes the model file. With `blocked=True`
(the CPU presets' `cpu_kernels`) it is `label_smoothed_cross_entropy` below, which on CPU avoids the `(tokens,
vocab)` fp32 temporaries of `F.cross_entropy` (glibc maps and page-faults fresh memory for each; see
`docs/performance.md`); elsewhere it is `F.cross_entropy`. With `output_chunks=k` the criterion takes the decoder's
last hidden states instead of the logits and computes the output projection (§3.4) and the loss together in `k` row
chunks (`linear_label_smoothed_cross_entropy`), so that no `(tokens, vocab)` tensor exists at all, fp32 or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import MethodType

import torch
from accelerate import Accelerator
from torch.nn import functional as F

from vaswani_transformer.modeling_vaswani_transformer import shift_tokens_right


__all__ = [
    "LabelSmoothedCrossEntropyCriterion",
    "keep_logits_in_autocast_dtype",
    "label_smoothed_cross_entropy",
    "linear_label_smoothed_cross_entropy",
]

# Elements (rows x vocabulary) of one fp32 block of the loss on CPU: 4 MiB, which stays in the L2/L3 cache and is
# served again from the allocator's heap, where a whole `(N, V)` fp32 temporary is above glibc's mmap threshold.
_CPU_LOSS_BLOCK_ELEMENTS = 1 << 20


def _loss_block_rows(logits: torch.Tensor, block_rows: int | None) -> int:
    """Rows per block: `block_rows`, else ~1M elements on CPU and every row at once elsewhere (on a GPU one kernel
    over the whole tensor is fastest and a Python loop of blocks would be launch-bound)."""
    if block_rows is not None:
        return max(1, block_rows)
    rows = logits.shape[0]
    if logits.device.type == "cpu":
        return max(1, min(rows, _CPU_LOSS_BLOCK_ELEMENTS // max(1, logits.shape[-1])))
    return max(1, rows)


class _LabelSmoothedCrossEntropy(torch.autograd.Function):
    """Label-smoothed cross-entropy whose gradient is computed in the forward pass, block by block.

    `F.cross_entropy(logits, labels, label_smoothing=eps)` saves the `(N, V)` log-probabilities for backward and
    builds two more `(N, V)` tensors there. Here each block of `block_rows` rows gives, while it is in the cache,
    both its loss terms (log Z = logsumexp(z) and mean_k z_k, in fp32) and its gradient (softmax(z) - q) / n, written
    in the logits' own dtype. Only that gradient is saved (not the logits), and backward scales it by the incoming
    gradient. Without `needs_grad` (no_grad, evaluation) the gradient is not computed. Not twice differentiable.
    """

    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        labels: torch.Tensor,
        epsilon: float,
        ignore_index: int,
        block_rows: int,
        needs_grad: bool,
    ) -> torch.Tensor:
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)  # fp32 (fp64 for fp64 logits)
        rows, vocab_size = logits.shape
        valid = labels != ignore_index  # (N,)
        targets = labels.masked_fill(~valid, 0).unsqueeze(1)  # (N, 1), any in-range id where ignored
        count = valid.sum()
        scale = torch.where(valid, 1.0 / count, 0.0)  # (N,): d loss / d per_token; 0 where ignored
        log_z = logits.new_empty(rows, dtype=compute_dtype)  # (N,) logsumexp(z)
        mean_logit = logits.new_empty(rows, dtype=compute_dtype)  # (N,) mean_k z_k
        grad = torch.empty_like(logits) if needs_grad else None  # (N, V) in the logits' dtype
        for start in range(0, rows, block_rows):
            end = start + block_rows
            block = logits[start:end].to(compute_dtype)  # (rows, V); the same tensor if fp32
            torch.logsumexp(block, dim=-1, out=log_z[start:end])
            torch.mean(block, dim=-1, out=mean_logit[start:end])
            if grad is None:
                continue
            # z - log Z in fp32 (fp64 for fp64 logits), while the block is in the cache; in place on a converted copy
            if logits.dtype == compute_dtype:
                block = torch.sub(block, log_z[start:end].unsqueeze(1))  # (rows, V)
            else:
                block.sub_(log_z[start:end].unsqueeze(1))
            block.exp_().sub_(epsilon / vocab_size)  # softmax(z) - eps / V
            block.scatter_add_(1, targets[start:end], block.new_full((block.shape[0], 1), epsilon - 1.0))
            grad[start:end] = block.mul_(scale[start:end].unsqueeze(1))  # - (1 - eps) at the target
        target_logit = logits.gather(1, targets).squeeze(1).to(compute_dtype)  # (N,)
        # -sum_k q(k) log p(k) = (1 - eps) (log Z - z_y) + eps (log Z - mean_k z_k)
        per_token = log_z - (1.0 - epsilon) * target_logit - epsilon * mean_logit  # (N,)
        if grad is not None:
            ctx.save_for_backward(grad)
        return torch.where(valid, per_token, 0.0).sum() / count  # 0 / 0 = nan when all ignored, as F.cross_entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors  # (N, V): d loss / d logits, never modified (backward may run again)
        if grad_output.device.type != "cpu" or grad_output.item() != 1.0:  # no host sync on accelerators
            grad = grad * grad_output  # a 0-dim fp32 factor: the product is taken in fp32, stored in grad's dtype
        return grad, None, None, None, None, None


def label_smoothed_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float, ignore_index: int = -100, block_rows: int | None = None
) -> torch.Tensor:
    """§5.4 (after Szegedy et al., 2016): cross-entropy against q(k) = (1 - eps) * [k = y] + eps / V, in blocks.

    Equals (1 - eps) * NLL(y) + eps * mean_k(-log p(k)) = log Z - (1 - eps) z_y - eps mean_k z_k, with z the
    logits and log Z their logsumexp; its gradient with respect to z is softmax(z) - q. Same value and gradient
    as `torch.nn.functional.cross_entropy(..., label_smoothing=eps)` (tested to fp32 rounding), computed in fp32
    from logits of any dtype, without `(N, V)` fp32 temporaries (`_LabelSmoothedCrossEntropy`).

    Args:
        logits: `(batch, tgt_len, vocab)`; labels: `(batch, tgt_len)` with `ignore_index` at ignored positions.
        epsilon: eps_ls, 0.1 in the paper.
        block_rows: target positions per block of fp32 arithmetic; None: ~1M elements a block on CPU, all rows at
            once on other devices. Blocks change the speed, not the result.
    Returns:
        scalar fp32: the mean over non-ignored target tokens (nats per token); nan if every position is ignored.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (batch * tgt_len, vocab)
    return _LabelSmoothedCrossEntropy.apply(
        flat_logits,
        labels.reshape(-1),  # (batch * tgt_len,)
        float(epsilon),
        ignore_index,
        _loss_block_rows(flat_logits, block_rows),
        torch.is_grad_enabled() and flat_logits.requires_grad,
    )


class _LinearLabelSmoothedCrossEntropy(torch.autograd.Function):
    """The output projection (§3.4) and the §5.4 loss in row chunks, with both gradients computed in the forward pass.

    For each chunk of rows: logits = h W^T in `compute_dtype` (bf16 under autocast), the loss terms in fp32 as in
    `_LabelSmoothedCrossEntropy`, g = (softmax(z) - q) / n, then d loss / d h = g W and d loss / d W += g^T h. Only
    one chunk's `(rows, vocab)` logits exist at a time; the saved tensors are the two gradients, `(N, d_model)` and
    `(vocab, d_model)`, which backward scales by the incoming gradient. The loop runs over a fixed number of chunks
    (`torch.tensor_split`), not rows a chunk, so that under `torch.compile` with dynamic shapes a new batch length
    changes the chunks' sizes, not the graph. Not twice differentiable.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        epsilon: float,
        ignore_index: int,
        chunks: int,
        compute_dtype: torch.dtype,
    ) -> torch.Tensor:
        vocab_size = weight.shape[0]
        valid = labels != ignore_index  # (N,)
        targets = labels.masked_fill(~valid, 0).unsqueeze(1)  # (N, 1), any in-range id where ignored
        count = valid.sum()
        scale = torch.where(valid, 1.0 / count, 0.0)  # (N,): d loss / d per_token; 0 where ignored
        weight_c = weight.to(compute_dtype)  # (V, d_model), converted once rather than once a chunk
        hidden_c = hidden.to(compute_dtype)  # (N, d_model)
        weight_grad = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))  # (V, d)
        per_token, hidden_grads = [], []
        for rows, row_targets, row_scale in zip(
            hidden_c.tensor_split(chunks), targets.tensor_split(chunks), scale.tensor_split(chunks), strict=True
        ):
            logits = torch.matmul(rows, weight_c.t())  # (rows, d) @ (d, V) -> (rows, V)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 for this chunk only
            log_z = torch.logsumexp(logits, dim=-1)  # (rows,)
            target_logit = logits.gather(1, row_targets).squeeze(1)  # (rows,)
            # -sum_k q(k) log p(k) = (1 - eps) (log Z - z_y) + eps (log Z - mean_k z_k)
            per_token.append(log_z - (1.0 - epsilon) * target_logit - epsilon * logits.mean(dim=-1))
            grad = logits.sub_(log_z.unsqueeze(1)).exp_().sub_(epsilon / vocab_size)  # softmax(z) - eps / V
            grad.scatter_add_(1, row_targets, grad.new_full(row_targets.shape, epsilon - 1.0))  # - (1 - eps) at y
            grad = grad.mul_(row_scale.unsqueeze(1)).to(compute_dtype)  # (rows, V): d loss / d logits
            hidden_grads.append(torch.matmul(grad, weight_c))  # (rows, V) @ (V, d) -> (rows, d)
            weight_grad = weight_grad + torch.matmul(grad.t(), rows)  # (V, rows) @ (rows, d) -> (V, d)
        loss = torch.where(valid, torch.cat(per_token), 0.0).sum() / count  # 0 / 0 = nan when all ignored
        ctx.save_for_backward(torch.cat(hidden_grads).to(hidden.dtype), weight_grad.to(weight.dtype))
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        hidden_grad, weight_grad = ctx.saved_tensors  # never modified (backward may run again)
        return hidden_grad * grad_output, weight_grad * grad_output, None, None, None, None, None


def linear_label_smoothed_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    ignore_index: int = -100,
    chunks: int = 8,
) -> torch.Tensor:
    """§3.4 + §5.4: `label_smoothed_cross_entropy(hidden @ weight.T, labels, epsilon)`, without the logits.

    The pre-softmax linear transformation and the label-smoothed cross-entropy (q(k) = (1 - eps) [k = y] + eps / V)
    computed together in `chunks` row chunks (`_LinearLabelSmoothedCrossEntropy`): the largest vocabulary-sized
    tensor is one chunk's fp32 logits, `(ceil(N / chunks), V)`, where the model's own head and `F.cross_entropy`
    hold `(N, V)` logits, an fp32 copy, and its log-probabilities. The idea is Liger Kernel's fused linear
    cross-entropy (Hsu et al. 2024, arXiv:2410.10989), written here in PyTorch operations: Liger's kernel needs
    Triton, and this one also runs on CPU and under `torch.compile`. Under autocast the matrix products run in the
    autocast dtype (as the model's `lm_head` would) and the loss in fp32.

    Args:
        hidden: `(batch, tgt_len, d_model)` decoder output (the model's last hidden state).
        weight: `(vocab, d_model)` output projection (`lm_head.weight`, tied to the embeddings in the paper).
        labels: `(batch, tgt_len)` with `ignore_index` at ignored positions.
        epsilon: eps_ls, 0.1 in the paper. chunks: row chunks (more: less memory, more, smaller matrix products).
    Returns:
        scalar fp32: the mean over non-ignored target tokens (nats per token); nan if every position is ignored.
    Raises:
        ValueError: if `chunks` < 1 or the widths of `hidden` and `weight` differ.
    """
    if chunks < 1:
        raise ValueError(f"chunks must be >= 1, got {chunks}")
    if hidden.shape[-1] != weight.shape[-1]:
        raise ValueError(f"hidden states of width {hidden.shape[-1]} but an output projection of {weight.shape[-1]}")
    device_type = hidden.device.type
    compute_dtype = hidden.dtype
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    return _LinearLabelSmoothedCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]),  # (batch * tgt_len, d_model)
        weight,
        labels.reshape(-1),  # (batch * tgt_len,)
        float(epsilon),
        ignore_index,
        chunks,
        compute_dtype,
    )


class LabelSmoothedCrossEntropyCriterion:
    """§5.4: the training loss of a batch, label-smoothed cross-entropy per non-ignored target token (fairseq's
    `label_smoothed_cross_entropy` criterion).

    Args:
        epsilon: eps_ls (`config.label_smoothing`, 0.1 in the paper).
        blocked: use `label_smoothed_cross_entropy` (blocked, gradient in the forward pass; the CPU presets'
            `cpu_kernels`) instead of `F.cross_entropy`. Same value and gradient either way, to fp32 rounding. Its
            Python loop and host check do not compile: leave it off under `torch.compile`.
        block_rows: with `blocked`, target positions per block (None: the automatic choice).
        output_chunks: 0 (default): the loss of the model's logits. k > 0: the output projection and the loss
            together in k row chunks (`linear_label_smoothed_cross_entropy`): the criterion runs the bare
            encoder-decoder (`model.model`) and never builds the `(tokens, vocab)` logits. Needs the model itself,
            not a DDP/FSDP wrapper (a wrapper's hooks run only through its own forward).
        autocast: with `output_chunks`, a callable returning the context the bare model runs in (accelerate's
            `accelerator.autocast`), since the top-level forward that `Accelerator.prepare` wraps in autocast is
            not called; None: no context.
    Raises:
        ValueError: for `blocked` together with `output_chunks`, or negative `output_chunks`.
    """

    def __init__(
        self,
        epsilon: float,
        blocked: bool = False,
        block_rows: int | None = None,
        output_chunks: int = 0,
        autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    ):
        if output_chunks < 0 or (blocked and output_chunks):
            raise ValueError(f"output_chunks must be >= 0 and excludes blocked, got {output_chunks} with {blocked=}")
        self.epsilon = float(epsilon)
        self.blocked = blocked
        self.block_rows = block_rows
        self.output_chunks = output_chunks
        self.autocast = autocast or contextlib.nullcontext

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`(batch, tgt_len, vocab)` logits, `(batch, tgt_len)` labels (-100 ignored) -> scalar fp32 mean loss."""
        if self.blocked:
            return label_smoothed_cross_entropy(logits, labels, self.epsilon, block_rows=self.block_rows)
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()  # (batch * tgt_len, vocab)
        return F.cross_entropy(flat_logits, labels.reshape(-1), label_smoothing=self.epsilon)

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of `model` on `batch` (`input_ids`, `attention_mask`, `labels` `(batch, tgt_len)` and
        optionally `decoder_input_ids`, else the labels shifted right, §3.1). Returns a scalar fp32 tensor.

        Raises:
            KeyError: if `batch` has no `labels`.
            TypeError: with `output_chunks`, for a model without `model` and `lm_head` (e.g. a DDP wrapper).
        """
        if self.output_chunks and not (hasattr(model, "model") and hasattr(model, "lm_head")):
            raise TypeError(f"output_chunks needs the model itself (model.model, model.lm_head), got {type(model)}")
        inputs = {name: value for name, value in batch.items() if name != "labels"}
        labels = batch["labels"]
        if "decoder_input_ids" not in inputs:
            config = getattr(model, "config", None) or model.module.config  # a DDP wrapper keeps it on .module
            inputs["decoder_input_ids"] = shift_tokens_right(
                labels, config.pad_token_id, config.decoder_start_token_id
            )
        if not self.output_chunks:
            return self.loss(model(**inputs).logits, labels)
        with self.autocast():
            hidden = model.model(**inputs).last_hidden_state  # (batch, tgt_len, d_model)
            return linear_label_smoothed_cross_entropy(
                hidden, model.lm_head.weight, labels, self.epsilon, chunks=self.output_chunks
            )


def keep_logits_in_autocast_dtype(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Keep accelerate's autocast on the prepared `model`'s forward but not its conversion of every output to fp32.

    With bf16/fp16 mixed precision, `Accelerator.prepare` wraps `forward` in autocast and then converts its floating
    outputs to fp32: a `(tokens, vocab)` fp32 copy of the logits every step, which the criterion would then keep
    (its saved gradient in fp32, and a conversion back in backward). The criterion computes in fp32 itself, so it
    takes the logits as autocast computed them. Uses accelerate's public `unwrap_model(keep_fp32_wrapper=False)`
    (which removes both wrappers) and re-applies `accelerator.autocast()`. Nothing happens without mixed precision.
    """
    if not accelerator.native_amp:
        return
    inner = accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # in place: forward as the class defines it
    inner.forward = MethodType(accelerator.autocast()(type(inner).forward), inner)
