"""What the decoding loops of `generation_vaswani_transformer` share: one decoder step at a time for one model or an
ensemble, the length penalty, target prefixes, greedy search for ensembles, and scoring given translations.

- `IncrementalDecoder` runs one model's decoder one step at a time on the rows still searched (`BeamSearchCache`
  holds its keys and values); `EnsembleDecoder` runs several and averages their probabilities (`log_mean_exp`). Beam
  search (`generation_vaswani_transformer.beam_search`) and `greedy_search` see either through the same methods.
- `force_target_prefix` / `TargetPrefixLogitsProcessor`: forced first tokens per sentence (CTranslate2's
  `target_prefix`, fairseq's `--prefix-size`), then a free search.
- `score`: teacher-forced log-probabilities of given targets, per token and per sentence, normalised as beam search
  normalises its `sequences_scores` (fairseq `--score-reference`, `marian-scorer`, CTranslate2 `score_batch`).

It imports only torch, transformers and the standard library: it travels with a saved model as remote code (the
modeling file imports it directly). Shapes: `sentences` still searched, `rows` = sentences x rows per sentence (the
beams), `vocab` = vocab_size, `members` = models of an ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteriaList
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput


__all__ = [
    "LENGTH_PENALTY_TYPES",
    "BeamSearchCache",
    "EnsembleDecoder",
    "IncrementalDecoder",
    "ScoreOutput",
    "TargetPrefixLogitsProcessor",
    "force_target_prefix",
    "generated_labels",
    "greedy_search",
    "length_penalty_denominator",
    "length_penalty_type",
    "log_mean_exp",
    "prefix_tensor",
    "score",
]

# Deviation from the paper (the default): |Y|^alpha, not GNMT's form that §6.1 cites; "gnmt" gives the paper's.
# How a finished hypothesis of `length` generated tokens is normalised, `generation_config.length_penalty_type`:
# "length" divides sum(log p) by length ** alpha (transformers, fairseq, CTranslate2: the default); "gnmt" divides
# it by ((5 + length) / 6) ** alpha, the length penalty of Wu et al. 2016 (GNMT, arXiv:1609.08144, §7 Eq. 14),
# which the paper cites for its "length penalty alpha = 0.6" (§6.1, reference [38]) and which tensor2tensor, the
# paper's code, implements. Only this package's beam search knows "gnmt".
LENGTH_PENALTY_TYPES = ("length", "gnmt")
NO_TOKEN = -1  # a `prefix_tensor` entry past the end of a sentence's prefix: nothing forced


def length_penalty_type(generation_config: GenerationConfig) -> str:
    """`generation_config.length_penalty_type` ("length" when unset). Raises ValueError for another value."""
    value = getattr(generation_config, "length_penalty_type", None) or "length"
    if value not in LENGTH_PENALTY_TYPES:
        raise ValueError(f"length_penalty_type must be one of {LENGTH_PENALTY_TYPES}, got {value!r}")
    return value


def length_penalty_denominator(length, alpha: float, penalty_type: str = "length"):
    """The divisor of a finished hypothesis' sum(log p): `length ** alpha` ("length") or `((5 + length) / 6) **
    alpha` ("gnmt", Wu et al. 2016 Eq. 14); `length` (an int or a tensor) in generated tokens (EOS included, start
    token excluded)."""
    return ((5 + length) / 6) ** alpha if penalty_type == "gnmt" else length**alpha


def log_mean_exp(log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """log((1/M) sum_m p_m): the log of the members' mean probability, from their log-probabilities (each of one
    shape, e.g. `(rows, vocab)`); the one tensor itself for M = 1.

    The ensemble rule of fairseq's `EnsembleModel.forward_decoder` (logsumexp - log M) and Sockeye's default
    `--ensemble-mode linear`. Computed as max + log(mean(exp(x - max))): every exp is at most 1 (no overflow), and
    for identical members the mean is exactly 1, so an ensemble of a model with itself scores exactly as the model.
    """
    if len(log_probs) == 1:
        return log_probs[0]
    stacked = torch.stack(list(log_probs))  # (members, ...)
    top = stacked.amax(dim=0)  # (...)
    return top + (stacked - top).exp().mean(dim=0).log()


class _CrossAttentionKeysValues:
    """W^K and W^V of the encoder output per decoder layer, `(sentences, heads, src_len, head_dim)`: what
    `VaswaniTransformerAttention` reads from an `EncoderDecoderCache.cross_attention_cache` (`.layers[i].keys`,
    `.layers[i].values`, `.update`)."""

    def __init__(self, num_layers: int):
        self.layers = [_KeysValues() for _ in range(num_layers)]

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.layers[layer_idx].keys, self.layers[layer_idx].values = keys, values
        return keys, values


class _KeysValues:
    keys: torch.Tensor
    values: torch.Tensor


class BeamSearchCache:
    """The decoder's keys and values during a search, readable by `VaswaniTransformerAttention` as it reads an
    `EncoderDecoderCache`: `update` appends a step's self-attention keys and values, `cross_attention_cache` and
    `is_updated` hold the encoder-decoder ones (computed once per sentence, at the first step).

    Self-attention tensors are `(rows, heads, steps, head_dim)`; `select_rows` reorders them after each step (beam
    search moves hypotheses between the beams of a sentence) and drops the rows of finished sentences in the same
    copy; `select_sentences` drops their encoder-decoder keys and values.
    """

    def __init__(self, num_layers: int):
        self.self_attention = [None] * num_layers  # per layer: (keys, values) of (rows, heads, steps, head_dim)
        self.cross_attention_cache = _CrossAttentionKeysValues(num_layers)
        self.is_updated: dict[int, bool] = {}

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Decoder steps cached (tokens)."""
        entry = self.self_attention[layer_idx]
        return 0 if entry is None else entry[0].shape[2]

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `(rows, heads, new_steps, head_dim)` keys and values; return all steps' for the layer."""
        entry = self.self_attention[layer_idx]
        if entry is not None:
            keys, values = torch.cat([entry[0], keys], dim=2), torch.cat([entry[1], values], dim=2)
        self.self_attention[layer_idx] = (keys, values)
        return keys, values

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep self-attention rows `rows` (`(new_rows,)` indices into the current rows), in that order."""
        self.self_attention = [
            None if entry is None else (entry[0].index_select(0, rows), entry[1].index_select(0, rows))
            for entry in self.self_attention
        ]

    def select_sentences(self, sentences: torch.Tensor) -> None:
        """Keep the encoder-decoder keys and values of `sentences` (`(new_sentences,)` indices), in that order."""
        for layer in self.cross_attention_cache.layers:
            if hasattr(layer, "keys"):
                layer.keys = layer.keys.index_select(0, sentences)
                layer.values = layer.values.index_select(0, sentences)


class IncrementalDecoder:
    """§3.1's decoder of one model, one target position at a time, for the rows of a search (`rows_per_sentence`
    hypotheses per sentence, in adjacent rows): `step` runs the decoder stack on each row's last token with the
    cached keys and values, `log_probs` gives the fp32 log-softmax of §3.4's output projection for a slice of rows
    (beam search takes them a chunk at a time), `select_rows`/`select_sentences` follow the search's reordering.

    Args:
        model: a `VaswaniTransformerForConditionalGeneration` in eval mode.
        encoder_hidden_states: `(sentences, src_len, d_model)`, one row per sentence.
        encoder_padding_mask: `(sentences, src_len)` source padding mask, or None.
        rows_per_sentence: the beams (1 for greedy search).
    """

    def __init__(self, model, encoder_hidden_states: torch.Tensor, encoder_padding_mask, rows_per_sentence: int):
        self.model, self.decoder, self.rows_per_sentence = model, model.get_decoder(), rows_per_sentence
        self.encoder_hidden_states = encoder_hidden_states  # (sentences, src_len, d_model)
        self.encoder_padding_mask = encoder_padding_mask  # (sentences, src_len) or None
        self.cache = BeamSearchCache(len(self.decoder.layers))
        self.encoder_attention_mask, self.mask_sentences = None, -1
        self.hidden_states = None  # (rows, d_model) after `step`

    def step(self, tokens: torch.Tensor, position: int) -> None:
        """Decode `(rows, 1)` tokens at target `position` (0 for the decoder start token)."""
        sentences = self.encoder_hidden_states.shape[0]
        inputs_embeds, hidden_states = self.decoder.embed(tokens, None, position)  # (rows, 1, d_model)
        if self.mask_sentences != sentences:  # the source mask, rebuilt when sentences leave (as the decoder does)
            self.encoder_attention_mask = create_bidirectional_mask(
                config=self.model.config,
                inputs_embeds=inputs_embeds.view(sentences, self.rows_per_sentence, -1),
                attention_mask=self.encoder_padding_mask,
                encoder_hidden_states=self.encoder_hidden_states,
            )
            self.mask_sentences = sentences
        for layer in self.decoder.layers:
            hidden_states = layer(
                hidden_states,
                None,  # one query step sees every cached step: no causal mask needed
                self.encoder_hidden_states,
                encoder_attention_mask=self.encoder_attention_mask,
                cache=self.cache,
            )
        self.hidden_states = self.decoder.final_norm(hidden_states)[:, -1]  # (rows, d_model)

    def log_probs(self, rows: slice) -> torch.Tensor:
        """`(len(rows), vocab)` fp32 log p(y_t | y_<t, x) of the rows `rows` after `step`."""
        return F.log_softmax(self.model.lm_head(self.hidden_states[rows]).float(), dim=-1)

    def select_sentences(self, sentences: torch.Tensor) -> None:
        """Keep the source side of `(new_sentences,)` sentences, in that order."""
        self.encoder_hidden_states = self.encoder_hidden_states.index_select(0, sentences)
        if self.encoder_padding_mask is not None:
            self.encoder_padding_mask = self.encoder_padding_mask.index_select(0, sentences)
        self.cache.select_sentences(sentences)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep the decoder states of `(new_rows,)` rows, in that order."""
        self.cache.select_rows(rows)


class EnsembleDecoder:
    """Several `IncrementalDecoder`s (models sharing one vocabulary) as one: each step runs every member, and
    `log_probs` is the log of their mean probability (`log_mean_exp`, fairseq's and Sockeye's default rule)."""

    def __init__(self, members: Sequence[IncrementalDecoder]):
        self.members = list(members)

    def step(self, tokens: torch.Tensor, position: int) -> None:
        for member in self.members:
            member.step(tokens, position)

    def log_probs(self, rows: slice) -> torch.Tensor:
        return log_mean_exp([member.log_probs(rows) for member in self.members])

    def select_sentences(self, sentences: torch.Tensor) -> None:
        for member in self.members:
            member.select_sentences(sentences)

    def select_rows(self, rows: torch.Tensor) -> None:
        for member in self.members:
            member.select_rows(rows)


def prefix_tensor(target_prefix, batch_size: int | None = None, device=None) -> torch.Tensor:
    """`(batch, longest prefix)` token ids, `NO_TOKEN` past each sentence's prefix, from one list of ids per sentence
    (an empty list: no prefix) or such a tensor; on `device` if given.

    Raises:
        ValueError: if `batch_size` is given and there is not one prefix per sentence.
    """
    if not isinstance(target_prefix, torch.Tensor):
        longest = max((len(ids) for ids in target_prefix), default=0)
        target_prefix = torch.tensor(
            [list(ids) + [NO_TOKEN] * (longest - len(ids)) for ids in target_prefix], dtype=torch.long
        ).view(len(target_prefix), longest)
    if target_prefix.dim() != 2 or batch_size not in (None, target_prefix.shape[0]):
        raise ValueError(f"target_prefix needs one prefix per sentence ({batch_size}), got {len(target_prefix)}")
    return target_prefix.to(device)


def force_target_prefix(scores: torch.Tensor, forced: torch.Tensor) -> torch.Tensor:
    """Forced decoding (CTranslate2's `target_prefix`): in each row whose sentence has a token to force at this
    step, every other token gets -inf; the forced token keeps its score.

    Args:
        scores: `(rows, vocab)` log-probabilities (or logits) of one step, the rows of a sentence adjacent.
        forced: `(sentences,)` the token to force per sentence, or `NO_TOKEN`.
    Returns:
        `(rows, vocab)` scores.
    Raises:
        ValueError: if the sentences do not divide the rows (a prefix list of the wrong length).
    """
    if scores.shape[0] % forced.shape[0]:
        raise ValueError(f"target_prefix has {forced.shape[0]} sentences, which do not divide {scores.shape[0]} rows")
    forced = forced.repeat_interleave(scores.shape[0] // forced.shape[0])  # (rows,)
    vocab = torch.arange(scores.shape[-1], device=scores.device)  # (vocab,)
    keep = (vocab[None, :] == forced[:, None]) | (forced < 0)[:, None]  # (rows, vocab)
    return scores.masked_fill(~keep, float("-inf"))


class TargetPrefixLogitsProcessor(LogitsProcessor):
    """`force_target_prefix` as a logits processor, for loops whose rows never change (transformers' greedy and beam
    loops, `greedy_search`): `rows // sentences` adjacent rows per sentence, the step read from the ids' length.

    Args:
        target_prefix: `(sentences, longest prefix)` ids from `prefix_tensor`.
        prompt_length: decoder tokens before the first generated one (1: the decoder start token).
    """

    def __init__(self, target_prefix: torch.Tensor, prompt_length: int = 1):
        self.target_prefix, self.prompt_length = target_prefix, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length  # tokens generated so far
        if step >= self.target_prefix.shape[1]:
            return scores
        return force_target_prefix(scores, self.target_prefix[:, step].to(scores.device))


@torch.no_grad()
def greedy_search(
    step_decoder: IncrementalDecoder | EnsembleDecoder,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
) -> torch.LongTensor:
    """Greedy search with the choices of transformers' `GenerationMixin._sample` (do_sample=False): the argmax of
    the processed scores each step, the pad id after a row has stopped, until every row has. It scores with
    log-probabilities (`step_decoder.log_probs`, an ensemble's mean) where transformers takes the raw logits; the
    argmax is the same, and logits processors see log-probabilities as in beam search.

    Args:
        step_decoder: the decoder(s), one row per sentence.
        input_ids: `(batch, 1)` decoder start tokens.
    Returns:
        `(batch, out_len)` token ids, starting with the decoder start token.
    """
    pad_token_id = generation_config._pad_token_tensor
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (batch,)
    while True:
        step_decoder.step(input_ids[:, -1:], input_ids.shape[1] - 1)
        scores = logits_processor(input_ids, step_decoder.log_probs(slice(None)))  # (batch, vocab)
        next_tokens = scores.argmax(dim=-1)  # (batch,)
        if pad_token_id is not None:
            next_tokens = torch.where(unfinished, next_tokens, pad_token_id)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)  # (batch, cur_len + 1)
        unfinished &= ~stopping_criteria(input_ids, scores)
        if not bool(unfinished.any()):
            return input_ids


def generated_labels(sequences: torch.LongTensor, eos_token_id) -> torch.LongTensor:
    """`(rows, out_len)` ids from `generate()` (decoder start token first) -> `(rows, out_len - 1)` labels for
    `score`: -100 after each row's first `</s>` (transformers pads finished hypotheses). `eos_token_id`: an int or
    a list of ints."""
    eos = torch.tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=sequences.device
    )
    labels = sequences[:, 1:]
    is_eos = torch.isin(labels, eos)
    after_end = (torch.cumsum(is_eos, dim=-1) - is_eos.long()) > 0  # a `</s>` came before
    return labels.masked_fill(after_end, -100)


@dataclass
class ScoreOutput(ModelOutput):
    """What `score` returns.

    Attributes:
        token_log_probs: `(batch, tgt_len)` log p(y_t | y_<t, x) (natural log) of each label; 0 where ignored.
        sequences_scores: `(batch,)` sum of `token_log_probs` / `length_penalty_denominator(lengths)`: beam search's
            `sequences_scores` for the same tokens.
        lengths: `(batch,)` labels scored per sentence (tokens, `</s>` included).
    """

    token_log_probs: torch.FloatTensor | None = None
    sequences_scores: torch.FloatTensor | None = None
    lengths: torch.LongTensor | None = None


@torch.no_grad()
def score(
    models,
    input_ids: torch.LongTensor,
    labels: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    length_penalty: float | None = None,
) -> ScoreOutput:
    """Forced decoding: the log-probability of given translations, per token and per sentence (§3.4's softmax).

    token t: log p(y_t | y_<t, x) by one teacher-forced forward pass (an ensemble: `log_mean_exp` of its members');
    sentence: sum_t log p(y_t | y_<t, x) / |y| ** length_penalty (or GNMT's divisor with
    `length_penalty_type="gnmt"`): how beam search ranks finished hypotheses, so a hypothesis it returns scores here
    its `sequences_scores` (fairseq `--score-reference`, `marian-scorer`, CTranslate2 `score_batch`).

    Args:
        models: a `VaswaniTransformerForConditionalGeneration`, or a sequence of them sharing one vocabulary.
        input_ids, attention_mask: `(batch, src_len)` source ids and padding mask.
        labels: `(batch, tgt_len)` target ids ending with `</s>`, without the decoder start token (the tokenizer's
            `text_target` ids), -100 where padded.
        generation_config: where `length_penalty` and `length_penalty_type` come from (default: the first model's).
        length_penalty: overrides the generation config's.
    Returns:
        `ScoreOutput`.
    Raises:
        ValueError: for an unknown `length_penalty_type`.
    """
    models = list(models) if isinstance(models, Sequence) else [models]
    config = models[0].config
    generation_config = generation_config or models[0].generation_config
    alpha = generation_config.length_penalty if length_penalty is None else length_penalty
    alpha = 1.0 if alpha is None else alpha  # transformers' default, where the config leaves it unset
    penalty_type = length_penalty_type(generation_config)
    scored = labels != -100  # (batch, tgt_len)
    targets = labels.masked_fill(~scored, config.pad_token_id)
    start = torch.full_like(targets[:, :1], config.decoder_start_token_id)
    decoder_input_ids = torch.cat([start, targets[:, :-1]], dim=1)  # labels shifted right, (batch, tgt_len)
    per_model = []
    for model in models:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (batch, tgt_len, vocab)
        per_model.append(log_probs.gather(-1, targets[..., None])[..., 0])  # (batch, tgt_len)
    token_log_probs = log_mean_exp(per_model).masked_fill(~scored, 0.0)
    lengths = scored.sum(dim=-1)  # (batch,)
    denominator = length_penalty_denominator(lengths.float(), alpha, penalty_type)
    return ScoreOutput(
        token_log_probs=token_log_probs, sequences_scores=token_log_probs.sum(-1) / denominator, lengths=lengths
    )
