"""Ensembles: several models sharing one vocabulary translate together, averaging their probabilities at each step.

    from vaswani_transformer import VaswaniTransformerTokenizerFast
    from vaswani_transformer.ensemble import EnsembleModel

    ensemble = EnsembleModel.from_pretrained(["outputs/run_seed1", "outputs/run_seed2"])
    tokenizer = VaswaniTransformerTokenizerFast.from_pretrained("outputs/run_seed1")
    batch = tokenizer(["A man is riding a bicycle."], return_tensors="pt")
    ids = ensemble.generate(**batch)  # beam search with the first model's generation config
    labels = tokenizer(text_target=["Ein Mann fährt Fahrrad."], return_tensors="pt")["input_ids"]
    scores = ensemble.score(**batch, labels=labels)  # per token and per sentence

At each decoder step the next-token distribution is log((1/M) sum_m p_m(y_t | y_<t, x)), the log of the members'
mean probability (`decoding_vaswani_transformer.log_mean_exp`): the rule of fairseq's `EnsembleModel` (its
`forward_decoder` takes logsumexp - log M over the models' log-probabilities) and Sockeye's default
`--ensemble-mode linear`. Each member keeps its own encoder output and decoder cache; the search (this package's
beam search, or greedy search) is the single model's, through `generate(custom_generate=...)`, so the generation
config, logits processors, stopping criteria and target prefixes apply as they do to one model.

This module is part of the installed package only (a saved model does not need it); the decoder steps it uses
(`IncrementalDecoder`, `EnsembleDecoder`) travel with the model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.utils import GenerationMode

from .decoding_vaswani_transformer import (
    EnsembleDecoder,
    IncrementalDecoder,
    ScoreOutput,
    TargetPrefixLogitsProcessor,
    greedy_search,
    prefix_tensor,
    score,
)
from .generation_vaswani_transformer import beam_search, one_row_per_sentence, unsupported_reason
from .modeling_vaswani_transformer import VaswaniTransformerForConditionalGeneration


__all__ = ["SHARED_CONFIG_FIELDS", "EnsembleModel", "ensemble_decoding_loop"]

# What the members of an ensemble must agree on: one vocabulary and the same special ids.
SHARED_CONFIG_FIELDS = ("vocab_size", "pad_token_id", "eos_token_id", "decoder_start_token_id")
ENSEMBLE_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.BEAM_SEARCH)


class EnsembleModel:
    """Models with one vocabulary that decode and score as one, by the mean of their probabilities at each step.

    `generate` and `score` take what a single model's take; decoding settings come from the first model's
    `generation_config` (or the call's arguments).

    Args:
        models: `VaswaniTransformerForConditionalGeneration`s in eval mode, on one device.
    Raises:
        ValueError: if `models` is empty or the models differ in a `SHARED_CONFIG_FIELDS` field (named).
    """

    def __init__(self, models: Sequence):
        self.models = list(models)
        if not self.models:
            raise ValueError("An ensemble needs at least one model")
        first = self.models[0].config
        for index, model in enumerate(self.models[1:], start=1):
            for name in SHARED_CONFIG_FIELDS:
                if getattr(model.config, name) != getattr(first, name):
                    raise ValueError(
                        f"Model {index} of the ensemble has {name}={getattr(model.config, name)}, model 0 has "
                        f"{getattr(first, name)}: the models of an ensemble must share one vocabulary"
                    )

    @classmethod
    def from_pretrained(cls, paths: Sequence[str], **kwargs) -> EnsembleModel:
        """Load each of `paths` with `VaswaniTransformerForConditionalGeneration.from_pretrained(path, **kwargs)`,
        in eval mode. Raises OSError for a path that holds no model, ValueError as the constructor."""
        return cls(
            [VaswaniTransformerForConditionalGeneration.from_pretrained(path, **kwargs).eval() for path in paths]
        )

    @property
    def generation_config(self) -> GenerationConfig:
        """The first model's generation config: the ensemble's decoding defaults."""
        return self.models[0].generation_config

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    def to(self, device) -> EnsembleModel:
        """Move every model to `device`; returns the ensemble."""
        self.models = [model.to(device) for model in self.models]
        return self

    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        target_prefix=None,
        **kwargs,
    ) -> torch.LongTensor:
        """Translate `(batch, src_len)` source ids with every model at once: greedy or beam search (`num_beams`) on
        the mean of the models' probabilities at each step.

        Args:
            input_ids, attention_mask: `(batch, src_len)` source ids and padding mask.
            target_prefix: forced first tokens per sentence, as `VaswaniTransformerForConditionalGeneration.generate`.
            **kwargs: `generate()` arguments (`num_beams`, `length_penalty`, `max_new_tokens`,
                `num_return_sequences`, `generation_config`, ...).
        Returns:
            `(batch * num_return_sequences, out_len)` token ids, as `generate`.
        Raises:
            ValueError: for a generation mode other than greedy and beam search, or what only transformers' loop
                can run (`return_dict_in_generate`, ...), with more than one model.
        """
        if len(self.models) == 1:
            return self.models[0].generate(
                input_ids=input_ids, attention_mask=attention_mask, target_prefix=target_prefix, **kwargs
            )
        loop = functools.partial(
            ensemble_decoding_loop,
            members=self.models[1:],
            source_ids=input_ids,
            source_mask=attention_mask,
            target_prefix=target_prefix,
        )
        return self.models[0].generate(
            input_ids=input_ids, attention_mask=attention_mask, custom_generate=loop, **kwargs
        )

    def score(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        length_penalty: float | None = None,
    ) -> ScoreOutput:
        """Forced decoding with the ensemble: `decoding_vaswani_transformer.score` on every model, the log of the
        mean probability per token."""
        return score(self.models, input_ids, labels, attention_mask, generation_config, length_penalty)


def ensemble_decoding_loop(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    members: Sequence = (),
    source_ids: torch.LongTensor | None = None,
    source_mask: torch.Tensor | None = None,
    target_prefix=None,
    **model_kwargs,
) -> torch.LongTensor:
    """The `custom_generate` of `EnsembleModel.generate`: `model` (whose `generate` prepared the call) and `members`
    decode together through an `EnsembleDecoder`, with this package's `beam_search` or `greedy_search`.

    Args:
        input_ids: `(batch * num_beams, 1)` decoder start tokens.
        members: the other models of the ensemble.
        source_ids, source_mask: `(batch, src_len)` source ids and padding mask, which `members` encode.
        target_prefix: one list of forced target ids per sentence, or None.
        model_kwargs: as `generate()` prepared them (`encoder_outputs` of `model`, repeated per beam, ...).
    Returns:
        `(batch * num_return_sequences, out_len)` token ids.
    Raises:
        ValueError: for a mode other than greedy or beam search, or a call only transformers' loop can run.
    """
    mode = generation_config.get_generation_mode()
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"An ensemble decodes with greedy or beam search, not {mode.value} (do_sample=False)")
    rows_per_sentence = generation_config.num_beams
    shared = one_row_per_sentence(model_kwargs, rows_per_sentence, input_ids.shape[0])
    reason = unsupported_reason(model, input_ids, logits_processor, stopping_criteria, generation_config, shared)
    if reason is not None:
        raise ValueError(f"An ensemble cannot decode this call: {reason}")
    decoders = [
        IncrementalDecoder(model, shared["encoder_outputs"][0], shared.get("attention_mask"), rows_per_sentence)
    ]
    for member in members:
        encoded = member.get_encoder()(input_ids=source_ids, attention_mask=source_mask).last_hidden_state
        decoders.append(IncrementalDecoder(member, encoded, source_mask, rows_per_sentence))
    step_decoder = EnsembleDecoder(decoders)
    batch_size = input_ids.shape[0] // rows_per_sentence
    prefix = None if target_prefix is None else prefix_tensor(target_prefix, batch_size, input_ids.device)
    if mode == GenerationMode.BEAM_SEARCH:
        return beam_search(
            model, input_ids, logits_processor, stopping_criteria, generation_config, step_decoder, prefix, **shared
        )
    if prefix is not None:
        logits_processor = LogitsProcessorList(
            [*logits_processor, TargetPrefixLogitsProcessor(prefix, input_ids.shape[1])]
        )
    return greedy_search(step_decoder, input_ids, logits_processor, stopping_criteria, generation_config)
