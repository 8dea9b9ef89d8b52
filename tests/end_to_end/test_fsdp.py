"""FSDP2 through accelerate on 2 CPU processes (gloo), launched as users launch it on GPUs:

    accelerate launch --config_file vaswani_transformer/training/presets/accelerate_fsdp2.yaml --num_processes 2 \\
        training/train.py ... --use_cpu true

Covered: the run is really sharded (accelerate's FSDP distributed type, sharded checkpoint files); its losses over
20 steps equal those of one process accumulating the same global batches (rtol 1e-4: both average the same
gradients, in a different summation order; test_training.py shows a 2-process DDP run equal to that same reference);
a run interrupted after its step-10 checkpoint and resumed under FSDP reaches step 20 with the uninterrupted run's
losses and weights; the final model is one consolidated safetensors file that `from_pretrained` loads, equal to the
last checkpoint's weights, and translates.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_in_process
from safetensors.torch import load_file
from test_training import TRAIN, free_port, read_log, run, tiny_args

from vaswani_transformer.training.presets import PRESETS_DIR


FSDP_CONFIG = str(PRESETS_DIR / "accelerate_fsdp2.yaml")
# No dropout, so that the two engines see identical computations; no averaging, so that the final model is the
# weights of the last step; validation every 10 steps exercises beam search on the all-gathered copy.
COMMON = "--use_cpu true --dropout 0 --max_steps 20 --logging_steps 1 --eval_steps 10 --save_steps 10 --seed 3"


def launch(config: str, data_dir: Path, output_dir: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "2"]
    command += ["--main_process_port", str(free_port()), TRAIN]
    run([*command, *tiny_args(data_dir, output_dir, *COMMON.split(), *extra)], timeout=300)


def losses(output_dir: Path) -> dict[int, float]:
    return {line["step"]: line["loss"] for line in read_log(output_dir) if "loss" in line}


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, multi30k_dir) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    launch(FSDP_CONFIG, multi30k_dir, out, "--average_last_k", "1", "--do_test", "true")
    return out


def test_the_run_is_sharded(fsdp_run):
    results = json.loads((fsdp_run / "train_results.json").read_text())
    assert results["distributed_type"] == "FSDP" and results["num_processes"] == 2
    checkpoint = fsdp_run / "checkpoint-20"
    # accelerate's sharded model and optimizer (torch.distributed.checkpoint), one file per rank each
    assert len(list((checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2
    assert len(list((checkpoint / "optimizer_0").glob("*.distcp"))) == 2
    assert [line["step"] for line in read_log(fsdp_run) if "eval_bleu" in line] == [10, 20]
    assert results["num_sentences"] == 8  # the test split translated on 2 ranks with the all-gathered model


def test_fsdp_losses_equal_one_process_losses(fsdp_run, multi30k_dir, tmp_path):
    one = tmp_path / "one"
    same_batches = ["--gradient_accumulation_steps", "2"]  # each step: the 2 micro-batches the 2 ranks take
    args = [*COMMON.split(), *same_batches, "--tokenizer_name", str(fsdp_run), "--do_test", "false"]
    train_in_process(tiny_args(multi30k_dir, one, *args))
    assert json.loads((one / "train_results.json").read_text())["distributed_type"] == "NO"
    expected, sharded = losses(one), losses(fsdp_run)
    assert sorted(sharded) == list(range(1, 21))
    assert [sharded[step] for step in sorted(sharded)] == pytest.approx(
        [expected[step] for step in sorted(sharded)], rel=1e-4
    )


def interrupted_copy(run_dir: Path, copy: Path, step: int) -> None:
    """`run_dir` as a job killed right after its checkpoint-`step` would have left it: without the later
    checkpoints, the log after `step`, the final model and generation config, the results and the card."""
    shutil.copytree(run_dir, copy, ignore=lambda _, names: [n for n in names if n.startswith("checkpoint-")])
    shutil.copytree(run_dir / f"checkpoint-{step}", copy / f"checkpoint-{step}")
    written_at_the_end = ["model.safetensors", "generation_config.json", "train_results.json", "README.md"]
    for path in [path for pattern in [*written_at_the_end, "results_*", "hyps_*"] for path in copy.glob(pattern)]:
        path.unlink()
    kept = [line for line in read_log(run_dir) if line["step"] <= step and "test_bleu" not in line]
    (copy / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))


def test_fsdp_resumes_exactly(fsdp_run, multi30k_dir, tmp_path):
    resumed = tmp_path / "resumed"
    interrupted_copy(fsdp_run, resumed, step=10)
    assert not (resumed / "model.safetensors").exists() and max(losses(resumed)) == 10
    args = ["--do_test", "false", "--average_last_k", "1", "--resume_from_checkpoint", "latest"]
    launch(FSDP_CONFIG, multi30k_dir, resumed, *args)  # the run's own settings; its tokenizer is in `resumed`
    uninterrupted, after_resume = losses(fsdp_run), losses(resumed)
    assert [after_resume[step] for step in range(11, 21)] == [uninterrupted[step] for step in range(11, 21)]
    expected, got = load_file(fsdp_run / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_final_model_is_one_consolidated_safetensors_file(fsdp_run):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert [path.name for path in fsdp_run.glob("*.safetensors")] == ["model.safetensors"]
    model = AutoModelForSeq2SeqLM.from_pretrained(fsdp_run, trust_remote_code=True)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied (§3.4)
    # The consolidated checkpoint file (what averaging reads) holds the same weights as the final model.
    last = load_file(fsdp_run / "checkpoint-20" / "model.safetensors")
    state = model.state_dict()
    for key, tensor in last.items():
        assert torch.equal(state[key], tensor), key
    tokenizer = AutoTokenizer.from_pretrained(fsdp_run, trust_remote_code=True)
    inputs = tokenizer(["A dog runs."], return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=5).shape[0] == 1


@pytest.mark.parametrize("name", ["accelerate_fsdp2.yaml", "accelerate_fsdp2_2nodes.yaml"])
def test_fsdp_configs_load_and_name_the_model_layers(name):
    """The GPU configs (the 2-node one cannot run here) load with accelerate's own reader, ask for FSDP2 and wrap
    layer classes that exist, the model's `_no_split_modules`."""
    from accelerate.commands.config.config_args import load_config_from_file

    from vaswani_transformer import VaswaniTransformerForConditionalGeneration

    config = load_config_from_file(str(PRESETS_DIR / name))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    assert config.num_processes == 8 * config.num_machines
    wrapped = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert wrapped == VaswaniTransformerForConditionalGeneration._no_split_modules
