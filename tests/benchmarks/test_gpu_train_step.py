"""`python -m benchmarks.gpu_train_step --dry-run` runs the GPU check's code end to end on CPU; its synthetic batches
follow the training loader's rules."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.flops import training_flops
from benchmarks.gpu_train_step import main, markdown, synthetic_batches
from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training.batching import non_pad_tokens


def test_synthetic_batches_are_padded_token_batches_of_a_learnable_task():
    batches = synthetic_batches(vocab_size=500, max_tokens=1024, count=5, pad_to_multiple_of=8)
    assert len(batches) == 5
    shapes = set()
    for batch in batches:
        source, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        shapes.add((source.shape, labels.shape))
        assert source.shape[1] % 8 == 0 and labels.shape[1] % 8 == 0
        assert source.numel() <= 1024 and labels.numel() <= 1024  # padded tokens a side within the budget
        assert torch.equal(source == VaswaniTransformerConfig.pad_token_id, mask == 0)
        assert source[mask.bool()].min() >= 4 and source.max() < 500  # no special token inside a sentence
        overlap = min(source.shape[1], labels.shape[1])
        both = mask[:, :overlap].bool() & (labels[:, :overlap] != -100)
        assert torch.equal(labels[:, :overlap][both], source[:, :overlap][both])  # the target repeats the source
        assert (labels != -100).sum(1).min() >= 2
    assert len(shapes) > 1  # batches of several shapes, as in training


@pytest.mark.slow  # compiles a tiny model (about 20 s alone on the 2-core machine, more under load)
def test_dry_run_writes_a_complete_report(tmp_path):
    results = main(["--dry-run", "--output", str(tmp_path)])
    assert results["compile_backend"] == "eager"  # the dry run's default: dynamo without inductor's minutes
    stem = next(tmp_path.glob("*-train-step-dry-run.json")).with_suffix("")
    assert json.loads(stem.with_suffix(".json").read_text()) == results
    assert stem.with_suffix(".md").read_text() == markdown(results)
    assert results["bf16_peak"]["peak_gflops"] > 0
    (entry,) = results["models"].values()
    assert set(entry["variants"]) == {"eager", "compiled"} and entry["skipped"] == []
    for measured in entry["variants"].values():
        assert measured["tokens_per_second"] > 0 and 0 < measured["mfu"] < 1
        assert len(measured["losses"]) == results["warmup_steps"] + results["steps"]
        assert all(math.isfinite(loss) for loss in measured["losses"])
    assert entry["variants"]["compiled"]["graphs_compiled_in_warmup"] == 1
    compared = entry["compared"]["compiled"]
    assert compared["no_recompilation_after_warmup"]["holds"]
    # dynamo alone ("eager" backend) runs the same operations with the same random draws: the same loss curve
    assert entry["variants"]["compiled"]["losses"] == entry["variants"]["eager"]["losses"]
    # FLOPs per token: the benchmark's own sum of `training_flops` over the timed batches, re-derived here
    config = VaswaniTransformerConfig(
        vocab_size=1000, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64
    )
    batches = synthetic_batches(config.vocab_size, results["max_tokens"], 4)
    model = VaswaniTransformerForConditionalGeneration(config)
    timed = [batches[i % 4] for i in range(results["warmup_steps"], results["warmup_steps"] + results["steps"])]
    flops = sum(training_flops(model, batch)["flops_per_step"] for batch in timed)
    tokens = sum(sum(non_pad_tokens(batch)) for batch in timed)
    assert math.isclose(entry["variants"]["eager"]["flops_per_token"], flops / tokens)
