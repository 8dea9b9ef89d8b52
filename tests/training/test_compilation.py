"""The compiled training step (`training.compilation`): no graph break in the model and the loss, one graph for
every padded batch shape, and the same loss and gradients as the eager step."""

import pytest
import torch
from conftest import tiny_config

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.compilation import compile_criterion, compiled_graphs, graph_breaks
from vaswani_transformer.training.criterion import LabelSmoothedCrossEntropyCriterion


def padded_batch(sentences: int, src_len: int, tgt_len: int, pad_token_id: int = 1) -> dict[str, torch.Tensor]:
    """A batch as `build_collator` makes it: the last sentence shorter on both sides (padding, -100 labels)."""
    input_ids = torch.randint(4, 1000, (sentences, src_len))  # (batch, src_len)
    attention_mask = torch.ones_like(input_ids)
    input_ids[-1, src_len // 2 :], attention_mask[-1, src_len // 2 :] = pad_token_id, 0
    labels = torch.randint(4, 1000, (sentences, tgt_len))  # (batch, tgt_len)
    labels[-1, tgt_len // 2 :] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.mark.parametrize(("attn_implementation", "output_chunks"), [("sdpa", 0), ("eager", 4)])
def test_the_training_step_traces_as_one_graph(attn_implementation, output_chunks):
    """`torch._dynamo.explain` over forward + loss of a model in training mode (dropout on): zero graph breaks, with
    the default loss and with the chunked output projection + loss; the row-blocked CPU loss is refused."""
    torch.manual_seed(0)
    config = tiny_config(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1)
    config._attn_implementation = attn_implementation
    model = VaswaniTransformerForConditionalGeneration(config).train()
    criterion = LabelSmoothedCrossEntropyCriterion(0.1, output_chunks=output_chunks)
    assert graph_breaks(criterion, model, padded_batch(3, 8, 16)) == []
    blocked = LabelSmoothedCrossEntropyCriterion(0.1, blocked=True)
    if output_chunks:  # the count sees breaks where there are some: the blocked loss reads a host value
        assert any("item()" in reason for reason in graph_breaks(blocked, model, padded_batch(3, 8, 16)))
    with pytest.raises(ValueError, match="blocked"):
        compile_criterion(blocked)


def test_batches_of_new_padded_shapes_reuse_the_first_graph():
    """After the first (dynamic) compilation, batches of other sizes and padded lengths compile nothing more, and
    each compiled loss and its gradients equal the eager criterion's. The backend is dynamo alone ("eager"): graphs
    and recompilations are dynamo's decisions, and it keeps the test fast."""
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(tiny_config()).train()
    criterion = LabelSmoothedCrossEntropyCriterion(0.1)
    compiled = compile_criterion(criterion, backend="eager")
    before = compiled_graphs()
    for shape in [(3, 8, 16), (5, 16, 24), (2, 24, 8), (7, 8, 40), (4, 32, 32)]:
        batch = padded_batch(*shape)
        loss = compiled(model, batch)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        expected = criterion(model, batch)
        expected.backward()
        torch.testing.assert_close(loss, expected)
        for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
            torch.testing.assert_close(got, want)
        model.zero_grad()
    assert compiled_graphs() - before == 1
    assert compiled.compile_seconds is not None and compiled.compile_seconds > 0


@pytest.mark.slow  # AOTAutograd traces forward and backward symbolically (about 30 s alone, over a minute under load)
def test_the_backward_compiled_by_aot_autograd_gives_the_eager_gradients():
    """Through AOTAutograd ("aot_eager": inductor's tracing and partitioning of forward and backward, without its
    code generation), the chunked output projection + loss (an `autograd.Function` with its own backward) gives
    the eager gradients on batches of two shapes, with one graph."""
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(tiny_config()).train()
    criterion = LabelSmoothedCrossEntropyCriterion(0.1, output_chunks=3)
    compiled = compile_criterion(criterion, backend="aot_eager")
    before = compiled_graphs()
    for shape in [(3, 8, 16), (5, 16, 24)]:
        batch = padded_batch(*shape)
        compiled(model, batch).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        criterion(model, batch).backward()
        for got, want in zip(grads, (p.grad for p in model.parameters()), strict=True):
            torch.testing.assert_close(got, want)
        model.zero_grad()
    assert compiled_graphs() - before == 1


@pytest.mark.slow  # AOTAutograd with decompositions and inductor's partitioner (15 s alone, more under load)
def test_the_compiled_step_keeps_no_fp32_copy_of_the_logits_for_backward():
    """Under bf16 autocast the eager step saves two fp32 `(tokens, vocab)` tensors for backward (the loss's fp32
    copy of the logits and its log-probabilities); compiled, with inductor's partitioner (backend
    "aot_eager_decomp_partition": inductor's decompositions and min-cut partitioning, without its C++/Triton code
    generation), only the bf16 logits are kept, and with `output_chunks` nothing of that size."""
    torch.manual_seed(0)
    model = VaswaniTransformerForConditionalGeneration(tiny_config(encoder_layers=1, decoder_layers=1)).train()
    batch = padded_batch(4, 16, 24)
    vocabulary_sized = 4 * 24 * model.config.vocab_size

    def saved_for_backward(criterion) -> list[torch.dtype]:
        """Dtypes of the tensors of at least tokens x vocab elements that the step saves for its backward."""
        saved = []

        def pack(tensor):
            if tensor.numel() >= vocabulary_sized:
                saved.append(tensor.dtype)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = criterion(model, batch)
        loss.backward()
        return saved

    eager = LabelSmoothedCrossEntropyCriterion(0.1)
    assert saved_for_backward(eager) == [torch.float32, torch.float32]
    assert saved_for_backward(compile_criterion(eager, backend="aot_eager_decomp_partition")) == [torch.bfloat16]
    assert saved_for_backward(LabelSmoothedCrossEntropyCriterion(0.1, output_chunks=4)) == []
