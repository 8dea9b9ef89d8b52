"""The paper's optimisation recipe (§5.3) as named functions that tests check against the formulas.

- `inverse_sqrt_lr`: the learning-rate schedule of §5.3, Eq. 3.
- `build_optimizer`: Adam with beta1 = 0.9, beta2 = 0.98, eps = 1e-9 (§5.3).
- `build_scheduler`: a `torch.optim.lr_scheduler.LambdaLR` whose lambda *is* Eq. 3 (the optimizer's base lr is 1.0).
- `eq3_multiplier`: the factor on Eq. 3 that makes its peak a given learning rate (`--learning_rate`).
- `effective_batch`, `gradient_accumulation_for`: the tokens an optimizer step holds (§5.1: ~25000 source and
  25000 target tokens), and the accumulation that reaches a target on any number of processes.
- `build_generation_config`: the decoding of §6.1 (beam search, length penalty) that a trained model is saved with.

Label smoothing (§5.4) is the training criterion (`training.criterion`), checkpoint averaging (§6.1)
`training.averaging`.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import GenerationConfig

from vaswani_transformer.configuration_vaswani_transformer import VaswaniTransformerConfig
from vaswani_transformer.training.arguments import DataArguments, TrainingArguments


__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "build_generation_config",
    "build_optimizer",
    "build_scheduler",
    "effective_batch",
    "eq3_multiplier",
    "gradient_accumulation_for",
    "inverse_sqrt_lr",
]

# §5.3: "We used the Adam optimizer with beta1 = 0.9, beta2 = 0.98 and eps = 10^-9."
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-9


def inverse_sqrt_lr(step: int, d_model: int, warmup_steps: int, multiplier: float = 1.0) -> float:
    """§5.3, Eq. 3: lrate = multiplier * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5).

    The rate rises linearly for the first `warmup_steps` optimizer steps, peaks at step == warmup_steps with
    multiplier * (d_model * warmup_steps)^-0.5, and then decays with the inverse square root of the step.

    Args:
        step: optimizer step, counted from 1 (the paper's step_num). Step 0 is treated as step 1 so that the very
            first update does not use a learning rate of 0 (`LambdaLR` evaluates the lambda at 0 before any step).
        d_model: model width (the paper's d_model; 512 base, 1024 big).
        warmup_steps: the paper's warmup_steps (4000).
        multiplier: a constant factor on Eq. 3 (1.0 = the paper). Small models and small batches often use 2.

    Returns:
        The learning rate (a plain float).

    Raises:
        ValueError: if `step` < 0, or `d_model`, `warmup_steps` or `multiplier` is not positive.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if d_model <= 0 or warmup_steps <= 0 or multiplier <= 0:
        raise ValueError(
            f"d_model, warmup_steps and multiplier must be positive, got {d_model}, {warmup_steps}, {multiplier}"
        )
    step = max(step, 1)
    return multiplier * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def eq3_multiplier(d_model: int, warmup_steps: int, learning_rate: float | None, lr_multiplier: float = 1.0) -> float:
    """The constant factor on Eq. 3 that a run uses: `lr_multiplier` (1.0: the paper), or, given a peak
    `learning_rate`, learning_rate * (d_model * warmup_steps)^0.5, so that Eq. 3's peak at step warmup_steps,
    d_model^-0.5 * warmup_steps^-0.5 times the factor, equals `learning_rate` (the shape stays Eq. 3's: linear
    warmup, then inverse square-root decay).

    Raises:
        ValueError: if `learning_rate` is given but not positive.
    """
    if learning_rate is None:
        return lr_multiplier
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    return learning_rate * (d_model * warmup_steps) ** 0.5


def gradient_accumulation_for(target_tokens_per_step: int, max_tokens: int, num_processes: int) -> int:
    """§5.1 ("each training batch contained a set of sentence pairs containing approximately 25000 source tokens and
    25000 target tokens"): the micro-batches per optimizer step, ceil(target / (max_tokens x num_processes)), so that
    a step holds at least the target in padded tokens per side, and less than one more micro-batch per process.

    Raises:
        ValueError: if a single micro-batch on every process already holds more than 1.25x the target (the step
            cannot be made smaller): names the numbers and the largest --max_tokens that fits.
    """
    per_micro_batch = max_tokens * num_processes  # padded tokens per side, all processes
    if per_micro_batch > 1.25 * target_tokens_per_step:
        raise ValueError(
            f"--target_tokens_per_step {target_tokens_per_step} cannot be met: {num_processes} processes x "
            f"--max_tokens {max_tokens} = {per_micro_batch} tokens in a single micro-batch; use --max_tokens "
            f"{target_tokens_per_step // num_processes} or fewer processes"
        )
    return math.ceil(target_tokens_per_step / per_micro_batch)


def effective_batch(max_tokens: int, num_processes: int, gradient_accumulation_steps: int) -> dict[str, int]:
    """The effective batch of one optimizer step, as printed at the start and written to train_results.json:
    tokens_per_step = max_tokens x num_processes x gradient_accumulation_steps (padded tokens per side, an upper
    bound: the token batches fill up to max_tokens, §5.1)."""
    return {
        "max_tokens": max_tokens,
        "num_processes": num_processes,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "tokens_per_step": max_tokens * num_processes * gradient_accumulation_steps,
    }


def build_optimizer(
    model: torch.nn.Module,
    lr: float = 1.0,
    betas: tuple[float, float] = ADAM_BETAS,
    eps: float = ADAM_EPS,
    weight_decay: float = 0.0,
    fused: bool | None = None,
) -> torch.optim.Adam:
    """§5.3: Adam with beta1 = 0.9, beta2 = 0.98, eps = 1e-9 over the model's trainable parameters.

    Args:
        model: the model whose `parameters()` with `requires_grad` are optimised (tied weights appear once).
        lr: base learning rate. Keep 1.0 when pairing with `build_scheduler`, whose lambda then *is* Eq. 3.
        betas, eps: Adam's moment decay rates and denominator epsilon (defaults: the paper's).
        weight_decay: L2 penalty; the paper uses none (0.0).
        fused: use PyTorch's fused Adam kernel (one pass over each parameter instead of one per update term; 5x
            faster than the default `foreach` version on a 2-core CPU for the 63M parameters of the base model).
            None (default): fused when every parameter is a floating-point tensor on CPU or CUDA, the devices
            `accelerate` moves the model to.

    Returns:
        A `torch.optim.Adam` (plain Adam, not AdamW, as in the paper).
    """
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if fused is None:
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)


def build_scheduler(
    optimizer: torch.optim.Optimizer, d_model: int, warmup_steps: int, multiplier: float = 1.0
) -> LambdaLR:
    """§5.3, Eq. 3 as a `LambdaLR`: lr(step) = base_lr * inverse_sqrt_lr(step + 1, d_model, warmup_steps, multiplier).

    `LambdaLR` calls its lambda with the number of `scheduler.step()` calls made so far (0 before the first
    optimizer step); the paper counts steps from 1, hence `step + 1`. With the optimizer's base lr at 1.0
    (`build_optimizer`'s default) the lr used by the k-th optimizer step (k = 1, 2, ...) is exactly Eq. 3 at k.
    Call `scheduler.step()` once after every optimizer step (not every micro-batch under gradient accumulation).

    Raises:
        ValueError: if any parameter group's lr is not 1.0 (the lambda would then not be Eq. 3), or through
            `inverse_sqrt_lr` for non-positive `d_model`, `warmup_steps` or `multiplier`.
    """
    for group in optimizer.param_groups:
        if group["lr"] != 1.0:
            raise ValueError(f"build_scheduler expects the optimizer's base lr to be 1.0 (Eq. 3), got {group['lr']}")
    inverse_sqrt_lr(1, d_model, warmup_steps, multiplier)  # validates the arguments once, up front

    def eq3(step: int) -> float:
        return inverse_sqrt_lr(step + 1, d_model, warmup_steps, multiplier)

    return LambdaLR(optimizer, lr_lambda=eq3)


def build_generation_config(
    model_config: VaswaniTransformerConfig, train_args: TrainingArguments, data_args: DataArguments
) -> GenerationConfig:
    """§6.1 decoding: beam 4, length penalty 0.6 (`--length_penalty_type gnmt` for GNMT's form), early stopping.
    `max_new_tokens` = max_source_length + 50 covers "input length + 50" for every input seen in training;
    `training.evaluation` sets it per batch instead. With `--num_beams 1` (greedy) the beam-only flags are left
    out, as transformers rejects them there."""
    beam = {"length_penalty": train_args.length_penalty, "early_stopping": True} if train_args.num_beams > 1 else {}
    if beam and train_args.length_penalty_type != "length":  # only then: a saved config stays plain transformers
        beam["length_penalty_type"] = train_args.length_penalty_type
    return GenerationConfig(
        num_beams=train_args.num_beams,
        **beam,
        max_new_tokens=data_args.max_source_length + 50,
        pad_token_id=model_config.pad_token_id,
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        decoder_start_token_id=model_config.decoder_start_token_id,
    )
