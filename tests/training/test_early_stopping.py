"""Stopping rules of the training loop (`training.loop`): early stopping on a validation metric, counted in
validations, against transformers' own `EarlyStoppingCallback` fed the same metrics as the Trainer would."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import EarlyStoppingCallback, TrainerControl
from transformers import TrainerState as HfTrainerState

from vaswani_transformer.training.arguments import TrainingArguments, check_training_arguments
from vaswani_transformer.training.checkpoints import TrainerState
from vaswani_transformer.training.loop import early_stopping, stop_reason


def trainers_stop(values: list[float], metric: str, patience: int) -> int | None:
    """The 1-based validation after which transformers' Trainer stops: EarlyStoppingCallback.on_evaluate, then the
    best metric updated as `Trainer._determine_best_metric` does (strictly better replaces it)."""
    greater = metric != "loss"
    args = SimpleNamespace(metric_for_best_model=metric, greater_is_better=greater)
    callback, state, control = EarlyStoppingCallback(patience), HfTrainerState(), TrainerControl()
    for index, value in enumerate(values, start=1):
        callback.on_evaluate(args, state, control, metrics={f"eval_{metric}": value})
        if state.best_metric is None or (value > state.best_metric if greater else value < state.best_metric):
            state.best_metric = value
        if control.should_training_stop:
            return index
    return None


def our_stop(values: list[float], metric: str, patience: int) -> int | None:
    args = TrainingArguments(
        output_dir="x", eval_steps=1, early_stopping_patience=patience, metric_for_best_model=metric
    )
    state = TrainerState()
    for index, value in enumerate(values, start=1):
        state.step = index
        early_stopping(args, state, {f"eval_{metric}": value, "eval_seconds": 1.0})
        reason = stop_reason(args, state, epoch_length=10**6, time_up=False)
        if reason:
            assert reason.startswith(f"early_stopping_patience {patience}: eval_{metric} did not improve")
            return index
    return None


SEQUENCES = {
    "rises": [10.0, 12.0, 13.5, 14.0, 15.0],
    "plateau": [10.0, 12.0, 12.0, 11.0, 12.0, 13.0, 9.0, 8.0, 7.0],
    "noisy": [5.0, 4.0, 6.0, 5.5, 5.9, 6.1, 6.0, 6.05, 2.0, 1.0],
    "falls": [3.0, 2.5, 2.4, 2.6, 2.3, 2.35, 2.31, 2.32],
}


@pytest.mark.parametrize("values", SEQUENCES.values(), ids=SEQUENCES.keys())
@pytest.mark.parametrize("metric", ["bleu", "loss"])
@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stopping_stops_where_the_trainer_does(values, metric, patience):
    assert our_stop(values, metric, patience) == trainers_stop(values, metric, patience)


def test_early_stopping_is_off_by_default_and_needs_validations():
    state = TrainerState()
    args = TrainingArguments(output_dir="x")
    for value in (3.0, 2.0, 1.0):
        early_stopping(args, state, {"eval_bleu": value})
    assert state.validations_without_improvement == 2 and stop_reason(args, state, 10, False) is None
    with pytest.raises(ValueError, match="--early_stopping_patience 3 counts validations: it needs --eval_steps > 0"):
        check_training_arguments(TrainingArguments(output_dir="x", early_stopping_patience=3))


def test_the_other_stopping_rules_name_their_flag():
    args = TrainingArguments(output_dir="x", max_steps=5, num_train_epochs=2.0, max_train_minutes=1.0)
    assert stop_reason(args, TrainerState(step=5), 10, False) == "max_steps 5"
    assert stop_reason(args, TrainerState(step=3, epoch=2), 10, False) == "num_train_epochs 2.0"
    assert stop_reason(args, TrainerState(step=3), 10, True) == "max_train_minutes 1.0"
    assert stop_reason(args, TrainerState(step=3), 10, False) is None
