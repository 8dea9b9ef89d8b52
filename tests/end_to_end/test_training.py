"""End-to-end runs of training/train.py on a few hundred Multi30k pairs with a tiny model, as users run it.

One-process runs call the script's `main(argv)` in this process (`conftest.train_in_process`: what a new interpreter
would start from, without its seconds of imports); the 2-process run is `accelerate launch training/train.py` in a
subprocess, as users launch it. Covered: a complete run (save_pretrained + reload, log.jsonl, filter counts, test
scores), exact resumption after an interruption, a half-written checkpoint ignored, checkpoint averaging of a real
run, 2-process data parallelism against 1 process with the same global batch, and the errors for bad data and an
empty training set.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import OFFLINE, REPO_ROOT, train_in_process
from safetensors.torch import load_file

from vaswani_transformer.training.checkpoints import latest_checkpoint
from vaswani_transformer.training.presets import PRESETS_DIR
from vaswani_transformer.training.recipe import inverse_sqrt_lr


TRAIN = str(REPO_ROOT / "training" / "train.py")
ACCELERATE_2PROC = str(PRESETS_DIR / "accelerate_cpu_2proc.yaml")
TINY_MODEL = (
    "--model custom --d_model 32 --encoder_layers 2 --decoder_layers 2 --encoder_attention_heads 2 "
    "--decoder_attention_heads 2 --encoder_ffn_dim 64 --decoder_ffn_dim 64 --max_position_embeddings 128"
).split()


def tiny_args(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """120 train pairs in ~9 batches of <= 400 tokens per side (an epoch is ~4 steps of 2 micro-batches), warmup 4."""
    return [
        *TINY_MODEL,
        *f"--data_dir {data_dir} --output_dir {output_dir} --max_train_samples 120 --max_tokens 400".split(),
        *"--vocab_size 1000 --warmup_steps 4 --lr_multiplier 2 --seed 7 --logging_steps 2".split(),
        *"--max_eval_samples 8 --max_test_samples 8 --eval_batch_size 8 --num_beams 2".split(),
        *"--max_source_length 40 --max_target_length 40".split(),
        *extra,
    ]


def run(command: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """Run a training command (`accelerate launch ...`) from the repository root in a subprocess; fail the test with
    its stderr if it fails."""
    # One thread per process: on a busy 2-core CI machine, OpenMP threads waiting on each other cost more than
    # they gain for a model this small (torchrun sets the same for the 2-process run).
    env = {**os.environ, **OFFLINE, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-6000:]}"
    return result


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, multi30k_dir) -> tuple[Path, str]:
    """(output_dir, log) of the uninterrupted reference run: 8 optimizer steps of 2 accumulated micro-batches (about
    two epochs), validation every 4, checkpoints every 2 of which the newest 2 are kept and averaged into the final
    model."""
    out = tmp_path_factory.mktemp("smoke")
    extra = "--max_steps 8 --gradient_accumulation_steps 2 --save_steps 2 --eval_steps 4 --save_total_limit 2"
    extra += " --average_last_k 2"
    return out, train_in_process(tiny_args(multi30k_dir, out, *extra.split()))


def test_run_saves_a_reloadable_model(smoke):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

    out, _ = smoke
    model = AutoModelForSeq2SeqLM.from_pretrained(out, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    generation = GenerationConfig.from_pretrained(out)
    assert (generation.num_beams, generation.length_penalty, generation.early_stopping) == (2, 0.6, True)
    assert generation.max_new_tokens == 40 + 50  # max_source_length + 50 (§6.1)
    assert model.config.d_model == 32 and model.config.vocab_size == len(tokenizer)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied (§3.4)
    inputs = tokenizer(["A dog runs."], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=5).shape[0] == 1
    results = json.loads((out / "results_test_2016_flickr.json").read_text())
    assert results["num_sentences"] == 8 and results["bleu_signature"].startswith("nrefs:1|case:mixed")
    assert {"bleu", "chrf", "bleu_lowercase"} <= set(results)
    assert len((out / "hyps_test_2016_flickr.de").read_text().splitlines()) == 8
    train_results = json.loads((out / "train_results.json").read_text())
    assert train_results["step"] == 8 and train_results["averaged_checkpoints"] == ["checkpoint-6", "checkpoint-8"]
    # §6.1: the saved model is the mean of the last two checkpoints, not the weights of the last step.
    first, second = (load_file(out / name / "model.safetensors") for name in ("checkpoint-6", "checkpoint-8"))
    saved = load_file(out / "model.safetensors")
    for key in saved:
        torch.testing.assert_close(saved[key], (first[key].double() + second[key]).float() / 2, rtol=0, atol=1e-6)
    assert any(not torch.equal(saved[key], second[key]) for key in saved)


def test_a_finished_run_is_the_repository_push_to_hub_uploads(smoke):
    """Issue 11: the run renders its model card (README.md) at the end, with the test scores it measured."""
    from huggingface_hub import ModelCard

    from vaswani_transformer.training.hub import files_to_upload

    out, _ = smoke
    results = json.loads((out / "train_results.json").read_text())
    card = ModelCard.load(out / "README.md")
    metrics = {
        metric["type"]: metric["value"]
        for entry in card.data.to_dict()["model-index"][0]["results"]
        for metric in entry["metrics"]
    }
    assert metrics["sacrebleu"] == pytest.approx(results["bleu"]) and metrics["chrf"] == pytest.approx(results["chrf"])
    assert {"README.md", "model.safetensors", "tokenizer.json", "config.json"} <= set(files_to_upload(out))


def test_run_logs_every_step_and_the_filtered_pairs(smoke):
    out, output = smoke
    log = read_log(out)
    train_lines = [line for line in log if "loss" in line]
    assert [line["step"] for line in train_lines] == [2, 4, 6, 8]
    # The logged lr is the one each logged step used: Eq. 3 with d_model 32, warmup 4, multiplier 2.
    assert [line["lr"] for line in train_lines] == pytest.approx(
        [inverse_sqrt_lr(s, 32, 4, 2.0) for s in (2, 4, 6, 8)]
    )
    for line in train_lines:
        assert {
            "step",
            "epoch",
            "loss",
            "lr",
            "tokens_per_second",
            "elapsed_seconds",
            "rss_mib",
            "rss_file_mib",
        } <= set(line)
        assert line["loss"] > 0 and line["tokens_per_second"] > 0
        # Resident memory of the training process (MiB): at least what torch and transformers take to import.
        assert 100 < line["rss_mib"] < 24 * 1024 and 0 < line["rss_file_mib"] < line["rss_mib"]
    assert [line["step"] for line in log if "eval_bleu" in line] == [4, 8]
    stats = json.loads((out / "data_stats.json").read_text())["train"]
    assert stats["pairs"] == 120 and stats["source_too_long"] + stats["target_too_long"] > 0
    assert stats["kept"] + stats["empty"] + stats["source_too_long"] + stats["target_too_long"] == 120
    assert f"train: kept {stats['kept']} of 120 pairs" in output
    # save_total_limit 2: only the two newest checkpoints remain.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]


def test_resumed_run_reaches_the_same_weights(smoke, multi30k_dir, tmp_path):
    reference, _ = smoke
    same = ["--tokenizer_name", str(reference), "--gradient_accumulation_steps", "2", "--save_steps", "4"]
    same += ["--average_last_k", "2"]  # the reference's final model averages checkpoints 6 and 8, as this run's does
    # Stop at step 6 (mid second epoch, a checkpoint is written at the end), then resume to step 8.
    train_in_process(tiny_args(multi30k_dir, tmp_path, *same, "--max_steps", "6", "--do_test", "false"))
    assert latest_checkpoint(tmp_path).name == "checkpoint-6"  # the final step is checkpointed too
    (tmp_path / "checkpoint-100.tmp").mkdir()  # a save killed halfway must be ignored
    assert latest_checkpoint(tmp_path).name == "checkpoint-6"
    resume = ["--max_steps", "8", "--resume_from_checkpoint", "latest", "--do_test", "false"]
    output = train_in_process(tiny_args(multi30k_dir, tmp_path, *same, *resume))
    assert "resumed from" in output and "checkpoint-6" in output
    expected, resumed = load_file(reference / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for key in expected:
        assert torch.equal(expected[key], resumed[key]), key
    assert [line["step"] for line in read_log(tmp_path) if "loss" in line] == [2, 4, 6, 8]


def test_average_checkpoints_cli_on_a_run(smoke, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from vaswani_transformer.training.cli import average_checkpoints_main as average_main

    out, _ = smoke
    average_main(["--checkpoint_dir", str(out), "--last_k", "2", "--output", str(tmp_path)])
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, trust_remote_code=True)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    first, second = (load_file(out / name / "model.safetensors") for name in ("checkpoint-6", "checkpoint-8"))
    averaged = model.state_dict()
    for key in first:
        torch.testing.assert_close(averaged[key], (first[key].double() + second[key]).float() / 2, rtol=0, atol=1e-6)


def test_evaluate_cli_writes_scores_and_hypotheses(smoke, multi30k_dir, tmp_path):
    from vaswani_transformer.training.evaluate_cli import main as evaluate_main

    out, _ = smoke
    args = ["--model", str(out), "--split", "val", "--data_dir", str(multi30k_dir), "--max_samples", "4"]
    evaluate_main([*args, "--num_beams", "1", "--output_dir", str(tmp_path)])
    written = json.loads((tmp_path / "results_val.json").read_text())
    assert 0 <= written["bleu"] <= 100 and written["num_sentences"] == 4 and written["num_beams"] == 1
    assert "chrf_signature" in written and "bleu_lowercase" in written
    assert len((tmp_path / "hyps_val.de").read_text().splitlines()) == 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(smoke, multi30k_dir, tmp_path):
    reference, _ = smoke
    common = f"--tokenizer_name {reference} --dropout 0 --max_steps 4 --logging_steps 1 --do_test false".split()
    one, two = tmp_path / "one", tmp_path / "two"
    train_in_process(tiny_args(multi30k_dir, one, *common, "--gradient_accumulation_steps", "2"))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ACCELERATE_2PROC]
    two_args = tiny_args(multi30k_dir, two, *common, "--use_cpu", "true", "--eval_steps", "2", "--do_test", "true")
    run([*launch, "--main_process_port", str(free_port()), TRAIN, *two_args])
    results = json.loads((two / "train_results.json").read_text())
    assert results["distributed_type"] == "MULTI_CPU" and results["num_processes"] == 2  # DDP over gloo
    assert results["num_sentences"] == 8  # test BLEU gathered from 2 ranks (and weights checked equal on both)
    assert [line["step"] for line in read_log(two) if "eval_bleu" in line] == [2, 4]
    loss_one = [line["loss"] for line in read_log(one) if "loss" in line]
    loss_two = [line["loss"] for line in read_log(two) if "loss" in line]
    assert len(loss_one) == len(loss_two) == 4
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    # Same global batches, so the losses agree to fp32 noise. So do the weights, except the attention key biases:
    # softmax is invariant to them, their true gradient is 0, and Adam scales the fp32 noise left in its place
    # (a different summation order on 2 ranks) up to an lr-sized step. Those only get an lr-sized bound.
    weights_one, weights_two = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for key in weights_one:
        atol = 0.2 if key.endswith("proj.bias") else 1e-4
        torch.testing.assert_close(weights_two[key], weights_one[key], rtol=1e-3, atol=atol, msg=key)


def test_mismatched_line_counts_fail_naming_the_files(tmp_path):
    from vaswani_transformer.training.train import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.en").write_text("one\ntwo\nthree\n")
    (data / "train.de").write_text("eins\nzwei\n")
    with pytest.raises(ValueError, match=r"train\.en.*3 lines.*train\.de.*2 lines"):
        main([*TINY_MODEL, "--data_dir", str(data), "--output_dir", str(tmp_path / "out")])


def test_empty_training_set_is_a_clear_error(smoke, multi30k_dir, tmp_path):
    from vaswani_transformer.training.train import main

    reference, _ = smoke
    args = ["--tokenizer_name", str(reference), "--max_source_length", "1"]
    with pytest.raises(ValueError, match="no training pairs left after filtering"):
        main(tiny_args(multi30k_dir, tmp_path, *args))
