"""The training recipe against the paper: Eq. 3 schedule and Adam (§5.3), token batches (§5.1), averaging (§6.1),
and the offline sacreBLEU metric against sacrebleu itself. Fast unit tests, no training run."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vaswani_transformer.training.averaging import average_checkpoints, load_averaged_into
from vaswani_transformer.training.batching import (
    TokenBatchSampler,
    build_collator,
    make_token_batches,
    non_pad_tokens,
    padded_lengths,
)
from vaswani_transformer.training.checkpoints import (
    TRAINER_STATE_NAME,
    TrainerState,
    latest_checkpoint,
    list_checkpoints,
)
from vaswani_transformer.training.recipe import (
    build_optimizer,
    build_scheduler,
    effective_batch,
    eq3_multiplier,
    gradient_accumulation_for,
    inverse_sqrt_lr,
)


# §5.3, Eq. 3 ------------------------------------------------------------------------------------------------------


def eq3(step: int, d_model: int, warmup: int) -> float:
    """Eq. 3 typed straight from the paper."""
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


@pytest.mark.parametrize("step", [1, 2, 100, 3999, 4000, 4001, 10_000, 100_000])
def test_inverse_sqrt_lr_is_eq3(step):
    assert inverse_sqrt_lr(step, 512, 4000) == pytest.approx(eq3(step, 512, 4000), rel=1e-12)
    assert inverse_sqrt_lr(step, 512, 4000, multiplier=2.0) == pytest.approx(2 * eq3(step, 512, 4000), rel=1e-12)


def test_inverse_sqrt_lr_peaks_at_warmup():
    peak = inverse_sqrt_lr(4000, 512, 4000)
    assert peak == pytest.approx((512 * 4000) ** -0.5, rel=1e-12)  # ~6.99e-4 for the base model
    assert inverse_sqrt_lr(3999, 512, 4000) < peak > inverse_sqrt_lr(4001, 512, 4000)
    # Linear rise, inverse-square-root decay.
    assert inverse_sqrt_lr(2000, 512, 4000) == pytest.approx(peak / 2, rel=1e-12)
    assert inverse_sqrt_lr(16_000, 512, 4000) == pytest.approx(peak / 2, rel=1e-12)


def test_inverse_sqrt_lr_rejects_bad_arguments():
    with pytest.raises(ValueError):
        inverse_sqrt_lr(-1, 512, 4000)
    with pytest.raises(ValueError):
        inverse_sqrt_lr(1, 512, 0)


def test_adam_hyper_parameters():
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(model)
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9 and group["weight_decay"] == 0.0
    assert group["lr"] == 1.0


def test_fused_adam_step_equals_pytorch_reference_adam():
    """The fused kernel `build_optimizer` picks updates like `torch.optim.Adam`'s default (foreach) version."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, lr=1e-2)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.9, 0.98), eps=1e-9)
    assert optimizer.defaults["fused"] and not reference_optimizer.defaults["fused"]
    for _ in range(5):
        inputs = torch.randn(4, 8)
        for net, opt in ((model, optimizer), (reference, reference_optimizer)):
            net(inputs).square().mean().backward()
            opt.step()
            opt.zero_grad()
    for ours, expected in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours, expected)
    assert not build_optimizer(model, fused=False).defaults["fused"]


def test_scheduler_yields_eq3_through_optimizer_steps():
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(model)
    scheduler = build_scheduler(optimizer, d_model=64, warmup_steps=10, multiplier=2.0)
    used = []
    for _ in range(30):
        used.append(optimizer.param_groups[0]["lr"])  # the lr the next optimizer.step() uses
        model(torch.ones(1, 4)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    expected = [2.0 * eq3(step, 64, 10) for step in range(1, 31)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert max(used) == used[9]  # the peak is the 10th update (step == warmup_steps)


@pytest.mark.parametrize("d_model, warmup, peak", [(512, 4000, 5e-4), (256, 800, 1e-3), (16, 4, 3e-4)])
def test_learning_rate_is_the_peak_of_eq3s_shape(d_model, warmup, peak):
    """--learning_rate: Eq. 3 scaled so that its largest value, at step warmup_steps, is the given rate."""
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(model)
    scheduler = build_scheduler(optimizer, d_model, warmup, eq3_multiplier(d_model, warmup, peak))
    used = []
    for _ in range(3 * warmup):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(used) == pytest.approx(peak, rel=1e-12) and used.index(max(used)) == warmup - 1
    expected = [peak * eq3(step, d_model, warmup) / eq3(warmup, d_model, warmup) for step in range(1, 3 * warmup + 1)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert eq3_multiplier(d_model, warmup, None, 2.0) == 2.0  # unset: --lr_multiplier (1.0: the paper)


@pytest.mark.parametrize("processes, accumulation", [(1, 8), (2, 4), (3, 3), (4, 2), (8, 1), (10, 1)])
def test_accumulation_reaches_25k_tokens_a_step_on_any_process_count(processes, accumulation):
    """§5.1: ~25000 source and target tokens per step; the WMT presets' 3125 tokens per micro-batch and process."""
    assert gradient_accumulation_for(25_000, 3125, processes) == accumulation
    tokens = effective_batch(3125, processes, accumulation)["tokens_per_step"]
    assert tokens == 3125 * processes * accumulation and 25_000 <= tokens < 25_000 + 3125 * processes


def test_accumulation_refuses_a_micro_batch_far_over_the_target():
    with pytest.raises(ValueError, match=r"16 processes x --max_tokens 3125 = 50000 .* use --max_tokens 1562"):
        gradient_accumulation_for(25_000, 3125, 16)


def test_scheduler_requires_base_lr_one():
    optimizer = build_optimizer(torch.nn.Linear(2, 2), lr=0.5)
    with pytest.raises(ValueError, match="base lr"):
        build_scheduler(optimizer, 64, 10)


# §5.1 token batches -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lengths():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 60, size=1000)
    tgt = np.clip(src + rng.integers(-5, 6, size=1000), 1, None)
    src[7] = 700  # longer than max_tokens on its own
    return src, tgt


def padded(batch, lengths):
    return len(batch) * max(int(lengths[i]) for i in batch)


def test_token_batches_respect_max_tokens(lengths):
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, max_tokens=500, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        if batch == [7]:
            continue  # the over-long pair is a batch of its own
        assert padded(batch, src) <= 500 and padded(batch, tgt) <= 500
    assert [7] in batches
    # Similar lengths are grouped: far less padding than random batches of the same count would have.
    real = sum(int(src[i]) for i in range(len(src)))
    assert sum(padded(b, src) for b in batches if b != [7]) < 1.2 * (real - 700)


def test_token_batches_cover_every_pair_once_per_epoch(lengths):
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, max_tokens=500, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        flat = [i for batch in sampler for i in batch]
        assert sorted(flat) == list(range(len(src)))


def test_token_batches_deterministic_per_seed_and_epoch(lengths):
    src, tgt = lengths
    first, second = TokenBatchSampler(src, tgt, 500, seed=3), TokenBatchSampler(src, tgt, 500, seed=3)
    first.set_epoch(2)
    second.set_epoch(2)
    assert list(first) == list(second)
    epoch_2 = list(first)
    first.set_epoch(3)
    assert list(first) != epoch_2  # order (and tie-breaking) changes between epochs
    assert list(TokenBatchSampler(src, tgt, 500, seed=4)) != list(TokenBatchSampler(src, tgt, 500, seed=3))
    unshuffled = TokenBatchSampler(src, tgt, 500, shuffle=False)
    assert list(unshuffled) == list(TokenBatchSampler(src, tgt, 500, shuffle=False, seed=9))


@pytest.mark.parametrize("world", [2, 3])
def test_token_batches_ranks_disjoint_and_equal(lengths, world):
    src, tgt = lengths
    samplers = [TokenBatchSampler(src, tgt, 500, seed=5, num_replicas=world, rank=rank) for rank in range(world)]
    for sampler in samplers:
        sampler.set_epoch(1)
    per_rank = [list(sampler) for sampler in samplers]
    assert len({len(batches) for batches in per_rank}) == 1
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert len(seen) == len(set(seen))
    # Only the remainder (< world batches of the global list) is left out.
    global_batches = TokenBatchSampler(src, tgt, 500, seed=5)
    global_batches.set_epoch(1)
    assert len(list(global_batches)) - sum(map(len, per_rank)) < world
    # Rank r's k-th batch is the global list's batch k * world + r: a 1-process run with accumulation `world`
    # sees the same global batches.
    assert per_rank[1][0] == list(global_batches)[1]


@pytest.mark.parametrize("multiple", [8, 16])
def test_token_batches_count_the_collators_rounding(lengths, multiple):
    """With pad_to_multiple_of, the budget holds for lengths as the collator pads them (rounded up)."""
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, max_tokens=500, seed=1, pad_to_multiple_of=multiple)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(len(src)))
    rounded = [-(-length // multiple) * multiple for length in range(800)]
    for batch in batches:
        if batch != [7]:
            assert len(batch) * max(rounded[src[i]] for i in batch) <= 500
            assert len(batch) * max(rounded[tgt[i]] for i in batch) <= 500
    # The rounding costs batches: without it some batch would overflow the budget once padded.
    unrounded = list(TokenBatchSampler(src, tgt, max_tokens=500, seed=1))
    assert any(len(b) * max(rounded[src[i]] for i in b) > 500 for b in unrounded if b != [7])
    assert padded_lengths([1, 8, 9, 16, 17], multiple).tolist() == [rounded[n] for n in (1, 8, 9, 16, 17)]
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        TokenBatchSampler(src, tgt, 500, pad_to_multiple_of=0)


def greedy_batches(order, sides, max_tokens: int) -> list[list[int]]:
    """fairseq's batch_by_size written out item by item: add the next item while n * (longest item) stays within
    `max_tokens` on every side, else start a new batch (an item over the budget is a batch of its own)."""
    batches, batch, longest = [], [], [0] * len(sides)
    for index in order:
        grown = [max(length, int(side[index])) for length, side in zip(longest, sides, strict=True)]
        if batch and (len(batch) + 1) * max(grown) > max_tokens:
            batches.append(batch)
            batch, grown = [], [int(side[index]) for side in sides]
        batch.append(int(index))
        longest = grown
    return batches + [batch] if batch else batches


@pytest.mark.parametrize("sorted_by_length", [True, False])
@pytest.mark.parametrize("max_tokens", [1, 40, 500, 4096])
def test_token_batches_equal_the_item_by_item_greedy_rule(sorted_by_length, max_tokens):
    """The vectorised packer the sampler uses (`token_batch_bounds`) cuts exactly where the written-out greedy rule
    cuts: for length-sorted orders and arbitrary ones, with items over the budget."""
    rng = np.random.default_rng(max_tokens)
    src = rng.integers(1, 120, size=3000)
    tgt = np.clip(src + rng.integers(-30, 31, size=3000), 1, None)
    src[[5, 900]] = 5000  # over every budget: batches of their own
    order = np.lexsort((tgt, src)) if sorted_by_length else rng.permutation(3000)
    assert make_token_batches(src, tgt, max_tokens, order) == greedy_batches(order, [src, tgt], max_tokens)


def test_token_batch_sampler_rejects_bad_input():
    with pytest.raises(ValueError):
        TokenBatchSampler([1, 2], [1], 10)
    with pytest.raises(ValueError, match="empty"):
        TokenBatchSampler([], [], 10)
    with pytest.raises(ValueError):
        TokenBatchSampler([1], [1], 10, num_replicas=2, rank=2)


def test_collator_pads_labels_with_minus_100():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>")
    batch = build_collator(tokenizer)(
        [
            {"input_ids": [5, 6, 2], "attention_mask": [1, 1, 1], "labels": [7, 2]},
            {"input_ids": [5, 2], "attention_mask": [1, 1], "labels": [7, 8, 9, 2]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 2], [5, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[7, 2, -100, -100], [7, 8, 9, 2]]
    rounded = build_collator(tokenizer, pad_to_multiple_of=8)(
        [{"input_ids": [5, 6, 2], "attention_mask": [1, 1, 1], "labels": [7, 8, 9, 2]}] * 2
    )
    assert rounded["input_ids"].tolist() == [[5, 6, 2] + [0] * 5] * 2
    assert rounded["attention_mask"].tolist() == [[1, 1, 1] + [0] * 5] * 2
    assert rounded["labels"].tolist() == [[7, 8, 9, 2] + [-100] * 4] * 2


# §6.1 checkpoint averaging ----------------------------------------------------------------------------------------


def write_checkpoint(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "model.safetensors"))
    TrainerState(step=int(directory.name.split("-")[-1])).save(directory)
    return directory


def test_average_is_arithmetic_mean(tmp_path):
    generator = torch.Generator().manual_seed(0)
    checkpoints = [
        {"weight": torch.randn(3, 4, generator=generator), "bias": torch.randn(4, generator=generator)}
        for _ in range(5)
    ]
    paths = [write_checkpoint(tmp_path / f"checkpoint-{k}", ckpt) for k, ckpt in enumerate(checkpoints)]
    averaged = average_checkpoints(paths)
    for key in ("weight", "bias"):
        expected = sum(ckpt[key].double() for ckpt in checkpoints) / 5
        torch.testing.assert_close(averaged[key], expected.float(), rtol=0, atol=1e-7)
        assert averaged[key].dtype == torch.float32
    # One checkpoint: the identity.
    torch.testing.assert_close(average_checkpoints(paths[:1])["bias"], checkpoints[0]["bias"], rtol=0, atol=0)


def test_average_names_the_disagreeing_file(tmp_path):
    good = write_checkpoint(tmp_path / "checkpoint-1", {"weight": torch.zeros(2, 2)})
    bad_shape = write_checkpoint(tmp_path / "checkpoint-2", {"weight": torch.zeros(3, 2)})
    bad_keys = write_checkpoint(tmp_path / "checkpoint-3", {"other": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"checkpoint-2.*weight"):
        average_checkpoints([good, bad_shape])
    with pytest.raises(ValueError, match=r"checkpoint-3.*keys differ"):
        average_checkpoints([good, bad_keys])
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        average_checkpoints([tmp_path / "missing"])


def test_averaging_keeps_tied_weights_tied(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    models = [Tied() for _ in range(3)]
    # safetensors stores tied tensors once: save only the embedding.
    paths = [
        write_checkpoint(tmp_path / f"checkpoint-{k}", {"embed.weight": m.embed.weight.detach().clone()})
        for k, m in enumerate(models)
    ]
    target = load_averaged_into(Tied(), average_checkpoints(paths))
    assert target.head.weight is target.embed.weight
    expected = sum(m.embed.weight.detach().double() for m in models) / 3
    torch.testing.assert_close(target.head.weight.detach(), expected.float(), rtol=0, atol=1e-7)


def test_checkpoint_listing_ignores_tmp_and_incomplete(tmp_path):
    for step in (10, 20, 5):
        write_checkpoint(tmp_path / f"checkpoint-{step}", {"w": torch.zeros(1)})
    (tmp_path / "checkpoint-30.tmp").mkdir()  # a save killed halfway
    (tmp_path / "checkpoint-40").mkdir()  # no trainer_state.json
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-10", "checkpoint-20"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-20"
    assert (latest_checkpoint(tmp_path) / TRAINER_STATE_NAME).is_file()


# The offline sacreBLEU metric ---------------------------------------------------------------------------------------


def test_local_sacrebleu_metric_matches_sacrebleu():
    import sacrebleu

    from vaswani_transformer.training.evaluation import load_metric

    hypotheses = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee", "eine Frau singt"]
    references = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau singt auf der Bühne."]
    scores = load_metric().compute(predictions=hypotheses, references=[[r] for r in references])
    bleu = sacrebleu.corpus_bleu(hypotheses, [references])
    assert scores["bleu"] == pytest.approx(bleu.score, abs=1e-9)
    assert scores["bleu_lowercase"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score, abs=1e-9
    )
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score, abs=1e-9)
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "case:lc" in scores["bleu_lowercase_signature"] and "nc:6" in scores["chrf_signature"]
    assert math.isclose(load_metric().compute(predictions=references, references=references)["bleu"], 100.0)


def test_non_pad_tokens_counts_what_the_collator_did_not_pad(small_tokenizer):
    examples = [
        {"input_ids": [5, 6, 2], "attention_mask": [1, 1, 1], "labels": [7, 2]},
        {"input_ids": [5, 2], "attention_mask": [1, 1], "labels": [7, 8, 9, 2]},
    ]
    batch = build_collator(small_tokenizer)(examples)  # padded to (2, 3) source and (2, 4) target
    assert batch["input_ids"].shape == (2, 3) and batch["labels"].shape == (2, 4)
    assert non_pad_tokens(batch) == (3 + 2, 2 + 4)
