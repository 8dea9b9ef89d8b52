"""`--torch_compile` end to end: training/train.py with the compiled training step (`training.compilation`) trains
as the eager step does, with one graph for every batch of the run, and saves the same kind of model."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import train_in_process
from test_training import read_log, tiny_args

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.training import train as train_module
from vaswani_transformer.training.compilation import compile_criterion, compiled_graphs


@pytest.mark.slow  # two short training runs
def test_compiled_training_step_trains_like_the_eager_one(multi30k_dir, tmp_path, monkeypatch):
    """The same run with and without `--torch_compile`, bf16 autocast and `--cpu_kernels` (whose blocked loss gives
    way to the default one when compiling): the compiled run compiles one graph for its ~9 batch shapes, with
    validation in between, and logs the losses of an eager run with the default loss. The backend is dynamo alone
    ("eager"), which runs the operations it captured as they are, so the two runs' losses agree to fp32 rounding of
    the two loss implementations; inductor's compile time has no place in the test suite."""
    monkeypatch.setattr(train_module, "compile_criterion", functools.partial(compile_criterion, backend="eager"))
    common = "--max_steps 6 --eval_steps 3 --logging_steps 1 --mixed_precision bf16 --do_test false".split()
    common += ["--dropout", "0"]
    compiled_dir, eager_dir = tmp_path / "compiled", tmp_path / "eager"
    before = compiled_graphs()
    compiled = ["--torch_compile", "true", "--cpu_kernels", "true"]
    train_in_process(tiny_args(multi30k_dir, compiled_dir, *common, *compiled))
    assert compiled_graphs() - before == 1
    train_in_process(tiny_args(multi30k_dir, eager_dir, *common, "--tokenizer_name", str(compiled_dir)))
    losses = [[r["loss"] for r in read_log(run) if "loss" in r and "lr" in r] for run in (compiled_dir, eager_dir)]
    assert len(losses[0]) == 6
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), atol=2e-3, rtol=1e-3)
    model = VaswaniTransformerForConditionalGeneration.from_pretrained(compiled_dir)
    assert type(model.model.encoder.layers[0].dropout) is torch.nn.Dropout  # nothing of the training step saved
