"""Beam search for `VaswaniTransformerForConditionalGeneration.generate()`: transformers' algorithm, at the cost of
the sentences still being searched, run as the decoding loop of `generate(custom_generate=...)`.

`generate()` prepares the inputs, the cache, the logits processors and the stopping criteria as usual, then calls
`beam_search_loop` (chosen by `decoding_loop_for`) instead of its own beam-search loop. Where our loop cannot stand
in (`unsupported_reason`), `beam_search_loop` calls transformers' `GenerationMixin._beam_search` itself: the one
private transformers method this package touches (called, never overridden; `tests/model/test_contracts.py` checks
its signature). `transformers_decoding_loop` runs transformers' own loop on purpose, for comparisons.

`GenerationMixin._beam_search` (transformers 5.x) keeps every sentence of a batch in the search until the last one is
done, re-concatenates the self-attention keys and values of every row at every step, and adds the running beam
scores to a `(batch, beams * vocab_size)` array before its top-k: at 256 sentences x 4 beams x 8,000 tokens that
array is 32 MB, larger than the CPU's cache, and decoding gets 2x slower per sentence than at 64 sentences.

`beam_search` below makes the same choices with less work:
- a sentence leaves the batch as soon as its search is over (its `num_beams` finished hypotheses are final), so the
  decoder, the softmax and the cache shrink with it, as in fairseq's and eole's beam search;
- the output projection, log-softmax and top-k run on groups of `LOGITS_CHUNK_ROWS` rows, whose `(rows, vocab)`
  scores stay in cache;
- its only host synchronisation is one boolean read per step (which sentences are done), as transformers has.
Its choices are transformers': candidates = the top `2 * num_beams` of log p(y_t | y_<t, x) + the beam's score, a
finished hypothesis scores sum(log p) / (generated length) ** length_penalty, `early_stopping` as in
`GenerationConfig`; with `generation_config.length_penalty_type = "gnmt"` the divisor is GNMT's
((5 + length) / 6) ** length_penalty instead (`decoding_vaswani_transformer.LENGTH_PENALTY_TYPES`). With fp32
weights and the default type its token ids equal those of `GenerationMixin._beam_search`
(`tests/model/test_beam_search.py` checks this against transformers' own loop, on a trained model and real
sentences). The decoder steps it takes come from
`decoding_vaswani_transformer` (one model's `IncrementalDecoder`, or an ensemble's `EnsembleDecoder`), which also
forces target prefixes (`generate(target_prefix=...)`). It imports only torch, transformers, the standard library
and that module: it travels with the model as remote code.

Shapes: `sentences` still searched, `beams` = `num_beams`, `rows` = sentences * beams, `candidates` = 2 * beams
(one more set per extra EOS id), `vocab` = vocab_size, `max_length` in tokens including the decoder start token.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import torch
from transformers import GenerationConfig, GenerationMixin, LogitsProcessorList, StoppingCriteriaList
from transformers import generation as hf_generation
from transformers.generation.utils import GENERATION_MODES_MAPPING, GenerationMode
from transformers.modeling_outputs import BaseModelOutput

from .decoding_vaswani_transformer import (
    EnsembleDecoder,
    IncrementalDecoder,
    TargetPrefixLogitsProcessor,
    force_target_prefix,
    length_penalty_denominator,
    length_penalty_type,
    prefix_tensor,
)


# Rows of logits handled at once: 64 x 8,000 fp32 scores = 2 MB, which stays in a CPU core's cache through the
# softmax and top-k. Profiled on the 2-core CPU of benchmarks/results with transformers' loop: log-softmax over
# 1,024 rows x 8,000 took 21 ms a step, over 256 rows 1.9 ms (11x the time for 4x the rows).
LOGITS_CHUNK_ROWS = 64

# Logits processors and stopping criteria that look at each row alone (not at the row's position in the batch),
# so they give the same result when finished sentences have left the batch. Anything else runs transformers' loop.
ROW_WISE_LOGITS_PROCESSORS = (
    "ForcedBOSTokenLogitsProcessor",
    "ForcedEOSTokenLogitsProcessor",
    "InfNanRemoveLogitsProcessor",
    "LogitNormalization",
    "MinLengthLogitsProcessor",
    "MinNewTokensLengthLogitsProcessor",
    "NoBadWordsLogitsProcessor",
    "NoRepeatNGramLogitsProcessor",
    "RepetitionPenaltyLogitsProcessor",
    "SequenceBiasLogitsProcessor",
    "SuppressTokensAtBeginLogitsProcessor",
    "SuppressTokensLogitsProcessor",
)
ROW_WISE_STOPPING_CRITERIA = ("EosTokenCriteria", "MaxLengthCriteria", "MaxTimeCriteria", "StopStringCriteria")
# `cache` is `past_key_values` before transformers 5.25 (the same object under its older name).
MODEL_KWARGS = {"attention_mask", "encoder_outputs", "cache", "past_key_values", "use_cache"}
FINISHED = -1.0e9  # transformers' score for "not a candidate" (finished hypothesis slots not yet filled, etc.)


def _instances_of(objects, names: tuple[str, ...]) -> bool:
    classes = tuple(getattr(hf_generation, name) for name in names if hasattr(hf_generation, name))
    return all(isinstance(obj, classes) for obj in objects)


def unsupported_reason(
    model,
    input_ids: torch.Tensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    model_kwargs: dict,
) -> str | None:
    """Why `beam_search` cannot stand in for `GenerationMixin._beam_search` on this call, or None if it can.

    It can for deterministic beam search from the decoder start token on an "sdpa" or "eager" model, returning only
    the sequences, with row-wise logits processors and stopping criteria (the names above). Beam sampling,
    `return_dict_in_generate`, decoder prompts, a pre-filled cache and other attention
    implementations keep transformers' loop.
    """
    encoder_outputs = model_kwargs.get("encoder_outputs")
    cache = model_kwargs.get("cache", model_kwargs.get("past_key_values"))
    if generation_config.do_sample:
        return "beam sampling (do_sample=True)"
    if generation_config.return_dict_in_generate:
        return "return_dict_in_generate=True"
    if model.config._attn_implementation not in ("sdpa", "eager"):
        return f"attn_implementation {model.config._attn_implementation!r}"
    if input_ids.shape[1] != 1:
        return "a decoder prompt (decoder_input_ids longer than the start token)"
    if not model_kwargs.get("use_cache", True):
        return "use_cache=False"
    if set(model_kwargs) - MODEL_KWARGS:
        return f"model arguments {sorted(set(model_kwargs) - MODEL_KWARGS)}"
    if encoder_outputs is None or encoder_outputs[0].shape[0] * generation_config.num_beams != input_ids.shape[0]:
        return "encoder outputs with one row per beam"
    if cache is not None and cache.get_seq_length() > 0:
        return "a pre-filled cache"
    if not _instances_of(logits_processor, ROW_WISE_LOGITS_PROCESSORS):
        return f"logits processors {[type(p).__name__ for p in logits_processor]}"
    if not _instances_of(stopping_criteria, ROW_WISE_STOPPING_CRITERIA):
        return f"stopping criteria {[type(c).__name__ for c in stopping_criteria]}"
    return None


def _gather_beams(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """`(sentences, beams, ...)`, `(sentences, k)` -> `(sentences, k, ...)`: transformers' `_gather_beams`."""
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    step_decoder: IncrementalDecoder | EnsembleDecoder | None = None,
    target_prefix: torch.LongTensor | None = None,
    **model_kwargs,
) -> torch.LongTensor:
    """Beam search with the semantics of transformers' `GenerationMixin._beam_search` (5.x), sentences leaving the
    batch when done. Called by `beam_search_loop` when `unsupported_reason(...)` is None.

    Args:
        model: a `VaswaniTransformerForConditionalGeneration` in eval mode.
        input_ids: `(batch * beams, 1)` decoder start tokens.
        logits_processor, stopping_criteria: as built by `generate()`, row-wise (see `unsupported_reason`).
        generation_config: `num_beams`, `length_penalty`, `early_stopping`, `max_length`, `num_return_sequences`,
            and the pad and EOS ids prepared by `generate()` (`_pad_token_tensor`, `_eos_token_tensor`).
        model_kwargs: `encoder_outputs` (`(batch, src_len, d_model)`, one row per sentence), `attention_mask`
            (`(batch, src_len)` or None), and the unused `cache` (`past_key_values` before transformers 5.25) and
            `use_cache`.
        step_decoder: the decoder(s) to search with (an ensemble's `EnsembleDecoder`); default: the model's own
            `IncrementalDecoder` on `encoder_outputs`.
        target_prefix: `(batch, longest prefix)` tokens forced at the first steps of each sentence (`prefix_tensor`;
            `force_target_prefix`, applied after the logits processors), or None.
    Returns:
        `(batch * num_return_sequences, out_len)` token ids, best hypothesis first for each sentence, starting with
        the decoder start token; shorter hypotheses are filled with transformers' fill value (the pad id, or the
        first EOS id when the pad id is 0 or None), out_len = 1 + the longest returned hypothesis.
    """
    num_beams = generation_config.num_beams
    num_return_sequences = generation_config.num_return_sequences
    length_penalty = generation_config.length_penalty
    penalty_type = length_penalty_type(generation_config)
    early_stopping = generation_config.early_stopping
    max_length = generation_config.max_length
    pad_token_id = generation_config._pad_token_tensor
    eos_token_id = generation_config._eos_token_tensor
    device = input_ids.device
    batch_size = input_ids.shape[0] // num_beams
    cur_len = decoder_prompt_len = input_ids.shape[1]

    # transformers' choices: keep (EOS ids + 1) * beams candidates per sentence so that at least `beams` go on
    # even if the best `beams` all end; a finished candidate counts only if it is among the best `beams`.
    n_eos_tokens = eos_token_id.shape[0] if eos_token_id is not None else 0
    beams_to_keep = max(2, 1 + n_eos_tokens) * num_beams
    top_num_beam_mask = (torch.arange(beams_to_keep, device=device) < num_beams)[None, :]
    fill_value = (pad_token_id or eos_token_id[0]) if eos_token_id is not None else -1  # transformers' choice

    # Per sentence still searched: running and finished hypotheses, their scores and generated lengths.
    running_sequences = torch.full((batch_size, num_beams, max_length), fill_value, dtype=torch.long, device=device)
    running_sequences[:, :, :cur_len] = input_ids.view(batch_size, num_beams, cur_len)
    sequences = running_sequences.clone()  # finished hypotheses
    running_beam_scores = torch.zeros((batch_size, num_beams), device=device)
    running_beam_scores[:, 1:] = FINISHED  # all beams start equal: only the first one may expand at step 1
    beam_scores = torch.full((batch_size, num_beams), FINISHED, device=device)
    finished_lengths = torch.zeros((batch_size, num_beams), dtype=torch.long, device=device)  # generated tokens
    is_sent_finished = torch.zeros((batch_size, num_beams), dtype=torch.bool, device=device)
    improvement_possible = torch.ones((batch_size, 1), dtype=torch.bool, device=device)

    # Results of sentences that have left the search, by their index in the batch.
    sentence_ids = torch.arange(batch_size, device=device)  # batch index of each sentence still searched
    out_sequences = torch.full(
        (batch_size, num_return_sequences, max_length), fill_value, dtype=torch.long, device=device
    )
    out_lengths = torch.zeros((batch_size, num_return_sequences), dtype=torch.long, device=device)

    if step_decoder is None:
        step_decoder = IncrementalDecoder(
            model, model_kwargs["encoder_outputs"][0], model_kwargs.get("attention_mask"), num_beams
        )
    prefix_length = 0 if target_prefix is None else target_prefix.shape[1]

    while True:
        sentences = running_sequences.shape[0]
        flat_running_sequences = running_sequences[:, :, :cur_len].reshape(sentences * num_beams, cur_len)
        # a. One decoder step for every row: the last token of each running hypothesis.
        step_decoder.step(flat_running_sequences[:, -1:], cur_len - 1)

        # b. Accumulated log-probabilities and the top candidates, a chunk of sentences at a time.
        topk_log_probs = torch.empty((sentences, beams_to_keep), device=device)
        topk_indices = torch.empty((sentences, beams_to_keep), dtype=torch.long, device=device)
        chunk = max(1, LOGITS_CHUNK_ROWS // num_beams)
        for start in range(0, sentences, chunk):
            end = min(start + chunk, sentences)
            rows = slice(start * num_beams, end * num_beams)
            log_probs = logits_processor(flat_running_sequences[rows], step_decoder.log_probs(rows))
            if cur_len - decoder_prompt_len < prefix_length:  # forced tokens of a target prefix
                forced = target_prefix[sentence_ids[start:end], cur_len - decoder_prompt_len]  # (chunk sentences,)
                log_probs = force_target_prefix(log_probs, forced)
            log_probs = log_probs.view(end - start, num_beams, -1) + running_beam_scores[start:end, :, None]
            candidates = (topk_log_probs[start:end], topk_indices[start:end])
            torch.topk(log_probs.view(end - start, -1), beams_to_keep, out=candidates)
        vocab_size = log_probs.shape[-1]

        # c. The candidate hypotheses: their beam, their token; `running_sequences` rows gathered accordingly.
        topk_current_beam_indices = topk_indices // vocab_size  # (sentences, candidates)
        topk_running_sequences = _gather_beams(running_sequences, topk_current_beam_indices)
        topk_running_sequences[:, :, cur_len] = topk_indices % vocab_size

        # d. Candidates that end here (EOS, max_length, ...).
        next_token_hits_stopping_criteria = stopping_criteria(
            topk_running_sequences[:, :, : cur_len + 1].reshape(sentences * beams_to_keep, cur_len + 1), None
        ).view(sentences, beams_to_keep)

        # e. The best `beams` candidates that go on.
        topk_running_log_probs = topk_log_probs + next_token_hits_stopping_criteria.float() * FINISHED
        next_topk_indices = torch.topk(topk_running_log_probs, k=num_beams)[1]
        running_sequences = _gather_beams(topk_running_sequences, next_topk_indices)
        running_beam_scores = _gather_beams(topk_running_log_probs, next_topk_indices)
        source_beams = _gather_beams(topk_current_beam_indices, next_topk_indices)  # (sentences, beams)

        # f. Finished candidates among the best `beams` replace worse finished hypotheses (length-penalised).
        just_finished = next_token_hits_stopping_criteria & top_num_beam_mask
        finished_scores = topk_log_probs / length_penalty_denominator(
            cur_len + 1 - decoder_prompt_len, length_penalty, penalty_type
        )
        sentence_is_full = torch.all(is_sent_finished, dim=-1, keepdim=True) & (early_stopping is True)
        finished_scores += sentence_is_full.float() * FINISHED
        finished_scores += (~improvement_possible).float() * FINISHED
        finished_scores += (~just_finished) * FINISHED
        merged_scores = torch.cat((beam_scores, finished_scores), dim=1)
        keep = torch.topk(merged_scores, k=num_beams)[1]
        sequences = _gather_beams(torch.cat((sequences, topk_running_sequences), dim=1), keep)
        beam_scores = _gather_beams(merged_scores, keep)
        new_lengths = torch.full_like(topk_log_probs, cur_len + 1 - decoder_prompt_len, dtype=torch.long)
        finished_lengths = _gather_beams(torch.cat((finished_lengths, new_lengths), dim=1), keep)
        is_sent_finished = _gather_beams(torch.cat((is_sent_finished, just_finished), dim=1), keep)

        # g. Can the running beams still beat the worst finished hypothesis? transformers' heuristic.
        cur_len += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_hypothetical_length = max_length - decoder_prompt_len
        else:
            best_hypothetical_length = cur_len - decoder_prompt_len
        best_possible_running_score = running_beam_scores[:, :1] / length_penalty_denominator(
            best_hypothetical_length, length_penalty, penalty_type
        )
        worst_finished_score = torch.where(is_sent_finished, torch.min(beam_scores, dim=1, keepdim=True)[0], FINISHED)
        improvement_possible = improvement_possible & torch.any(
            best_possible_running_score > worst_finished_score, dim=-1, keepdim=True
        )

        # h. Sentences whose finished hypotheses can no longer change leave the batch.
        done = ~improvement_possible[:, 0]
        if early_stopping is True:
            done |= torch.all(is_sent_finished, dim=-1)
        all_hit = torch.all(next_token_hits_stopping_criteria)
        stop, all_done, any_done = torch.stack((all_hit, done.all(), done.any())).tolist()  # one host sync a step
        if stop or all_done:
            break
        rows_to_keep = (source_beams + torch.arange(sentences, device=device)[:, None] * num_beams).view(-1)
        if any_done:
            kept = (~done).nonzero().view(-1)  # (new sentences,)
            out_sequences[sentence_ids[done]] = sequences[done, :num_return_sequences]
            out_lengths[sentence_ids[done]] = finished_lengths[done, :num_return_sequences]
            sentence_ids, running_sequences, running_beam_scores = (
                sentence_ids[kept],
                running_sequences[kept],
                running_beam_scores[kept],
            )
            sequences, beam_scores, finished_lengths = sequences[kept], beam_scores[kept], finished_lengths[kept]
            is_sent_finished, improvement_possible = is_sent_finished[kept], improvement_possible[kept]
            step_decoder.select_sentences(kept)
            rows_to_keep = rows_to_keep.view(sentences, num_beams)[kept].view(-1)
        step_decoder.select_rows(rows_to_keep)

    out_sequences[sentence_ids] = sequences[:, :num_return_sequences]
    out_lengths[sentence_ids] = finished_lengths[:, :num_return_sequences]
    output_length = decoder_prompt_len + int(out_lengths.max())
    return out_sequences.view(batch_size * num_return_sequences, max_length)[:, :output_length]


BEAM_MODES = (GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE)


def _sharded_across_processes(model) -> bool:
    """Whether `model`'s parameters are sharded over several processes (FSDP, DeepSpeed ZeRO-3): then every
    process must run the same number of decoder steps (transformers' `synced_gpus`), which only its loop does."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_world_size() < 2:
        return False
    fsdp = tuple(getattr(torch.distributed.fsdp, name) for name in ("FSDPModule", "FullyShardedDataParallel")
                 if hasattr(torch.distributed.fsdp, name))  # fmt: skip
    return any(isinstance(module, fsdp) for module in model.modules()) or any(
        hasattr(parameter, "ds_id") for parameter in model.parameters()
    )


def decoding_loop_for(model, args: tuple, kwargs: dict, target_prefix=None) -> Callable | None:
    """The `custom_generate` that `generate(*args, **kwargs)` of `model` should use: `beam_search_loop` for beam
    search and beam sampling (which it hands to transformers' loop, or refuses with the "gnmt" length penalty), None
    (transformers' own loops) for every other mode, a streamer, `synced_gpus` or parameters sharded across processes.
    With a `target_prefix` (one list of token ids per sentence, or a `prefix_tensor`), the same loop with the prefix
    bound: `beam_search_loop`, or `prefixed_transformers_loop` where transformers' loop runs.

    Reads the generation mode as `generate` will (`GenerationConfig.update` with the call's keyword arguments,
    `GenerationConfig.get_generation_mode`), on a copy: nothing of the caller's is changed.
    """
    prefix = None if target_prefix is None else prefix_tensor(target_prefix)
    if kwargs.get("streamer") is not None or kwargs.get("synced_gpus") or _sharded_across_processes(model):
        return None if prefix is None else functools.partial(prefixed_transformers_loop, target_prefix=prefix)
    generation_config = kwargs.get("generation_config", args[1] if len(args) > 1 else None)
    generation_config = copy.deepcopy(generation_config or model.generation_config)
    generation_config.update(**kwargs)
    if generation_config.get_generation_mode(kwargs.get("assistant_model")) not in BEAM_MODES:
        return None if prefix is None else functools.partial(prefixed_transformers_loop, target_prefix=prefix)
    return beam_search_loop if prefix is None else functools.partial(beam_search_loop, target_prefix=prefix)


def one_row_per_sentence(model_kwargs: dict, beams: int, rows: int) -> dict:
    """`model_kwargs` with `encoder_outputs` and `attention_mask` kept once per sentence: `generate` repeats them per
    beam (`(rows, src_len, ...)`, rows = sentences * beams, a sentence's beams adjacent), and the search needs one
    `(sentences, src_len, ...)` row each. Left as they are when they are not repeated (their rows differ from
    `rows`)."""
    shared = dict(model_kwargs)
    encoder_outputs = model_kwargs.get("encoder_outputs")
    if encoder_outputs is not None and encoder_outputs[0].shape[0] == rows:
        shared["encoder_outputs"] = BaseModelOutput(last_hidden_state=encoder_outputs[0][::beams].contiguous())
        if model_kwargs.get("attention_mask") is not None:
            shared["attention_mask"] = model_kwargs["attention_mask"][::beams]  # (sentences, src_len)
    return shared


def beam_search_loop(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    target_prefix: torch.LongTensor | None = None,
    **model_kwargs,
):
    """The decoding loop of `generate(num_beams > 1)` (a `custom_generate` callable): `beam_search` on one encoder
    output per sentence, or transformers' `GenerationMixin._beam_search` where that cannot stand in
    (`unsupported_reason`: `return_dict_in_generate`, decoder prompts, other attention implementations, ...).

    Args:
        input_ids: `(batch * num_beams, 1)` decoder start tokens (longer with a decoder prompt).
        target_prefix: `(batch, longest prefix)` forced first tokens (`prefix_tensor`), or None.
        model_kwargs: as `generate()` prepared them: `encoder_outputs` and `attention_mask` repeated per beam
            (`(batch * num_beams, src_len, ...)`, the beams of a sentence in adjacent rows), the cache, `use_cache`.
    Returns:
        `(batch * num_return_sequences, out_len)` token ids, or transformers' `GenerateBeamEncoderDecoderOutput`
        when its loop runs the search.
    Raises:
        ValueError: `generation_config.length_penalty_type` is not "length"/"gnmt", or is "gnmt" (which
            transformers' loop does not know) on a call that only transformers' loop can run; `target_prefix` has
            not one row per sentence.
    """
    beams = generation_config.num_beams
    shared = one_row_per_sentence(model_kwargs, beams, input_ids.shape[0])
    if target_prefix is not None:
        target_prefix = prefix_tensor(target_prefix, input_ids.shape[0] // beams, input_ids.device)
    reason = unsupported_reason(model, input_ids, logits_processor, stopping_criteria, generation_config, shared)
    if reason is None:
        return beam_search(
            model, input_ids, logits_processor, stopping_criteria, generation_config, None, target_prefix, **shared
        )
    if length_penalty_type(generation_config) != "length":
        raise ValueError(
            f"length_penalty_type={generation_config.length_penalty_type!r} needs this model's beam search, "
            f"which cannot run this call ({reason}); use length_penalty_type='length' for it"
        )
    return prefixed_transformers_loop(
        model, input_ids, logits_processor, stopping_criteria, generation_config, target_prefix, **model_kwargs
    )


def prefixed_transformers_loop(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    target_prefix: torch.LongTensor | None = None,
    **model_kwargs,
):
    """`transformers_decoding_loop` with `TargetPrefixLogitsProcessor(target_prefix)` after the other logits
    processors (none added without a prefix): forced first tokens in transformers' greedy, sampling and beam loops,
    whose rows (sentences x `num_beams` or `num_return_sequences`, adjacent) never change."""
    if target_prefix is not None:
        logits_processor = LogitsProcessorList(
            [*logits_processor, TargetPrefixLogitsProcessor(prefix_tensor(target_prefix), input_ids.shape[1])]
        )
    return transformers_decoding_loop(
        model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs
    )


def transformers_decoding_loop(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    **model_kwargs,
):
    """transformers' own decoding loop for the generation mode (`GenerationMixin._beam_search`, `_sample`, ...),
    as a `custom_generate` callable: `model.generate(..., custom_generate=transformers_decoding_loop)` decodes
    exactly as `GenerationMixin.generate` would without this package's beam search (tests and benchmarks compare
    the two). Returns what that loop returns."""
    method = getattr(GenerationMixin, GENERATION_MODES_MAPPING[generation_config.get_generation_mode()])
    return method(model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs)
