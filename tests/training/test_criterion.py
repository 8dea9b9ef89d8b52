"""The training criterion (§5.4 label smoothing) against the formula and `F.cross_entropy`, blocked and plain."""

import pytest
import torch
from conftest import tiny_config
from torch.nn import functional as F

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.criterion import (
    LabelSmoothedCrossEntropyCriterion,
    keep_logits_in_autocast_dtype,
    label_smoothed_cross_entropy,
    linear_label_smoothed_cross_entropy,
)


def test_label_smoothing_is_szegedy_uniform_mixture():
    """§5.4 / Szegedy et al.: loss = -sum_k q(k) log p(k), q = (1 - eps) one_hot(y) + eps / V; -100 ignored."""
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    labels[1, 3:] = -100
    eps = 0.1
    log_probs = logits.log_softmax(-1)
    keep = labels != -100
    target = F.one_hot(labels.clamp(min=0), 11).float() * (1 - eps) + eps / 11
    expected = -(target * log_probs).sum(-1)[keep].mean()
    torch.testing.assert_close(label_smoothed_cross_entropy(logits, labels, eps), expected)
    torch.testing.assert_close(
        label_smoothed_cross_entropy(logits, labels, 0.0), F.nll_loss(log_probs[keep], labels[keep])
    )


@pytest.mark.parametrize("block_rows", [None, 1, 4, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothed_loss_value_and_gradient_equal_torch_cross_entropy(eps, dtype, block_rows):
    """Our memory-lean loss against `F.cross_entropy(label_smoothing=eps)` on the same fp32-converted logits, in
    one block, blocks of one row, blocks that do not divide the 27 rows, and the automatic choice."""
    torch.manual_seed(0)
    labels = torch.randint(0, 37, (3, 9))
    labels[0, 5:] = -100
    labels[2, :] = -100
    logits = (3 * torch.randn(3, 9, 37)).to(dtype).requires_grad_()
    reference_logits = logits.detach().float().requires_grad_()
    ours = label_smoothed_cross_entropy(logits, labels, eps, block_rows=block_rows)
    expected = F.cross_entropy(reference_logits.reshape(-1, 37), labels.reshape(-1), label_smoothing=eps)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected)
    upstream = torch.tensor(1.7)
    (ours * upstream).backward()
    (expected * upstream).backward()
    assert logits.grad.dtype == dtype
    tolerance = {} if dtype == torch.float32 else {"atol": 1e-3, "rtol": 1e-2}  # bf16 rounding of the gradient
    torch.testing.assert_close(logits.grad.float(), reference_logits.grad, **tolerance)
    assert torch.all(logits.grad[2] == 0) and torch.all(logits.grad[0, 5:] == 0)


@pytest.mark.parametrize("block_rows", [None, 3])
def test_label_smoothed_loss_gradcheck_and_all_ignored(block_rows):
    torch.manual_seed(0)
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, -100, 5, 0])
    assert torch.autograd.gradcheck(
        lambda z: label_smoothed_cross_entropy(z, labels, 0.1, block_rows=block_rows), (logits,)
    )
    all_ignored = torch.full((4,), -100)
    assert torch.isnan(label_smoothed_cross_entropy(logits, all_ignored, 0.1))
    assert torch.isnan(F.cross_entropy(logits, all_ignored, label_smoothing=0.1))


def test_label_smoothed_loss_gradient_is_the_same_on_a_second_backward():
    """The gradient is computed in the forward pass and saved: a retained graph's second backward (upstream 1.0,
    then 2.0) must give the same gradient again, scaled, and not one modified by the first."""
    torch.manual_seed(0)
    logits = (3 * torch.randn(10, 17)).requires_grad_()
    labels = torch.randint(0, 17, (10,))
    labels[3] = -100
    expected_logits = logits.detach().clone().requires_grad_()
    F.cross_entropy(expected_logits, labels, label_smoothing=0.1).backward()
    loss = label_smoothed_cross_entropy(logits, labels, 0.1)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss * 2.0, logits)
    torch.testing.assert_close(first, expected_logits.grad)
    torch.testing.assert_close(second, 2.0 * expected_logits.grad)


@pytest.mark.parametrize("chunks", [1, 4, 7, 40])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_linear_loss_value_and_gradients_equal_torch_cross_entropy_of_the_projection(eps, chunks):
    """The output projection and the loss in row chunks against `F.cross_entropy(h @ W.T, label_smoothing=eps,
    ignore_index=-100)` in fp32: value and the gradients of both h and W; chunk counts that do not divide the 27
    rows, and more chunks than rows."""
    torch.manual_seed(0)
    labels = torch.randint(0, 37, (3, 9))
    labels[0, 5:] = -100
    labels[2, :] = -100
    hidden = torch.randn(3, 9, 8, requires_grad=True)
    weight = torch.randn(37, 8, requires_grad=True)
    ours = linear_label_smoothed_cross_entropy(hidden, weight, labels, eps, chunks=chunks)
    reference_hidden = hidden.detach().clone().requires_grad_()
    reference_weight = weight.detach().clone().requires_grad_()
    logits = (reference_hidden @ reference_weight.t()).reshape(-1, 37)  # (27, 37)
    expected = F.cross_entropy(logits, labels.reshape(-1), label_smoothing=eps, ignore_index=-100)
    torch.testing.assert_close(ours, expected)
    (ours * 1.7).backward()
    (expected * 1.7).backward()
    torch.testing.assert_close(hidden.grad, reference_hidden.grad)
    torch.testing.assert_close(weight.grad, reference_weight.grad)
    assert torch.all(hidden.grad[2] == 0) and torch.all(hidden.grad[0, 5:] == 0)
    assert torch.isnan(linear_label_smoothed_cross_entropy(hidden, weight, torch.full((3, 9), -100), eps))
    with pytest.raises(ValueError, match="chunks"):
        linear_label_smoothed_cross_entropy(hidden, weight, labels, eps, chunks=0)


def test_linear_loss_never_builds_the_logits_and_follows_bf16_autocast():
    """No tensor of `(tokens, vocab)` elements is created in forward or backward (every operation's output is
    recorded by a `TorchDispatchMode`), and under bf16 autocast the value stays within bf16 rounding of the fp32
    loss of the same projection."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self.largest = max(self.largest, tensor.numel())
            return out

    torch.manual_seed(0)
    tokens, vocab, width = 64, 500, 16
    hidden = torch.randn(4, 16, width, requires_grad=True)
    weight = torch.randn(vocab, width, requires_grad=True)
    labels = torch.randint(0, vocab, (4, 16))
    with LargestOutput() as recorder:
        linear_label_smoothed_cross_entropy(hidden, weight, labels, 0.1, chunks=4).backward()
    assert recorder.largest == tokens // 4 * vocab  # one chunk's logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = linear_label_smoothed_cross_entropy(hidden, weight, labels, 0.1, chunks=4)
    full = F.cross_entropy((hidden @ weight.t()).reshape(-1, vocab), labels.reshape(-1), label_smoothing=0.1)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full, atol=0.05, rtol=0.02)  # bf16 logits: 8 significant bits


@pytest.mark.parametrize("options", [{}, {"blocked": True}, {"output_chunks": 3}], ids=["plain", "blocked", "chunked"])
def test_criterion_equals_the_models_own_loss_value_and_gradient(options):
    """`criterion(model, batch)` (labels shifted right into decoder inputs, §3.1) gives the loss and gradients of
    `model(**batch).loss`, the plain `F.cross_entropy(label_smoothing=eps)` a Hub user gets: from the logits, in
    row blocks, or (`output_chunks`) with the output projection in row chunks through the bare encoder-decoder (the
    tied embedding / output matrix's gradient included)."""
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(tiny_config(label_smoothing=0.1)).eval()
    batch = {"input_ids": torch.randint(4, 1000, (2, 6)), "labels": torch.randint(4, 1000, (2, 5))}
    batch["labels"][1, 3:] = -100
    criterion = LabelSmoothedCrossEntropyCriterion(model.config.label_smoothing, **options)
    ours = criterion(model, batch)
    ours.backward()
    ours_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    expected = model(**batch).loss
    expected.backward()
    torch.testing.assert_close(ours, expected)
    for got, want in zip(ours_grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
    with pytest.raises(KeyError, match="labels"):
        criterion(model, {"input_ids": batch["input_ids"]})


def test_output_chunks_need_the_model_itself_and_exclude_blocks():
    model = VaswaniTransformerForConditionalGeneration(tiny_config())
    batch = {"input_ids": torch.randint(4, 1000, (2, 6)), "labels": torch.randint(4, 1000, (2, 5))}
    with pytest.raises(TypeError, match="output_chunks"):
        LabelSmoothedCrossEntropyCriterion(0.1, output_chunks=3)(torch.nn.ModuleDict({"inner": model}), batch)
    with pytest.raises(ValueError, match="output_chunks"):
        LabelSmoothedCrossEntropyCriterion(0.1, blocked=True, output_chunks=2)


def test_a_prepared_bf16_model_gives_the_criterion_its_autocast_logits():
    """accelerate converts a bf16 model's outputs to fp32; `keep_logits_in_autocast_dtype` keeps its autocast only."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(4, 1000, (2, 6)), "labels": torch.randint(4, 1000, (2, 5))}
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    try:
        model = accelerator.prepare(VaswaniTransformerForConditionalGeneration(tiny_config()))
        converted = model(**batch)
        assert converted.logits.dtype == torch.float32
        keep_logits_in_autocast_dtype(accelerator, model)
        kept = model(**batch)
        assert kept.logits.dtype == torch.bfloat16 and kept.loss.dtype == torch.float32
        torch.testing.assert_close(kept.logits.float(), converted.logits)
        criterion = LabelSmoothedCrossEntropyCriterion(0.1, blocked=True)
        torch.testing.assert_close(criterion(model, batch), kept.loss, atol=1e-5, rtol=1e-5)
        # The chunked loss calls the bare encoder-decoder, outside the prepared forward: accelerate's autocast is
        # given to it, and the matrix products then run in bf16 as the prepared forward's do.
        chunked = LabelSmoothedCrossEntropyCriterion(0.1, output_chunks=2, autocast=accelerator.autocast)
        torch.testing.assert_close(chunked(model, batch), kept.loss, atol=1e-5, rtol=1e-5)
        fp32 = LabelSmoothedCrossEntropyCriterion(0.1, output_chunks=2)(model, batch)
        assert chunked(model, batch) != fp32
    finally:
        AcceleratorState._reset_state(True)
