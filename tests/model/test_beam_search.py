"""`generation_vaswani_transformer`: our beam search makes transformers' choices, and the batching helpers.

The reference is transformers' own `GenerationMixin._beam_search`, run on the same model through
`generate(custom_generate=transformers_decoding_loop)`. The model is conftest's `trained`, a tiny one trained for a
few hundred steps on real Multi30k pairs, so that beams end at different steps (a random model rarely emits `</s>`
and would only test the max_length path).
"""

from __future__ import annotations

import copy
import random
from unittest import mock

import pytest
import torch
from transformers import GenerationMixin

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer import generation_vaswani_transformer as generation
from vaswani_transformer.batching_vaswani_transformer import length_sorted_batches, pack_token_batches


Model = VaswaniTransformerForConditionalGeneration


def both(model, batch, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """`generate()` with our beam search and with transformers' loop, same arguments."""
    with torch.no_grad():
        ours = model.generate(**batch, **kwargs)
        reference = model.generate(**batch, **kwargs, custom_generate=generation.transformers_decoding_loop)
    return ours, reference


SETTINGS = {
    "paper: beam 4, alpha 0.6, early stopping": dict(num_beams=4, length_penalty=0.6, early_stopping=True),
    "beam 3, alpha 1, heuristic stopping": dict(num_beams=3, length_penalty=1.0, early_stopping=False),
    "beam 4, never stop early": dict(num_beams=4, length_penalty=0.6, early_stopping="never"),
    "beam 5, all returned": dict(num_beams=5, num_return_sequences=5, early_stopping=True),
    "beam 4, max_length hits": dict(num_beams=4, max_new_tokens=4),
    "beam 4, row-wise processors": dict(num_beams=4, no_repeat_ngram_size=2, min_new_tokens=3),
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_token_ids_equal_transformers_beam_search(trained, setting):
    model, tokenizer, sentences = trained
    kwargs = {"max_new_tokens": 30, **SETTINGS[setting]}
    batch = tokenizer(sentences, padding=True, return_tensors="pt")  # 48 sentences of 5 to 40 tokens, padded
    ours, reference = both(model, batch, **kwargs)
    assert torch.equal(ours, reference)
    lengths = (ours[:, 1:] != tokenizer.eos_token_id).sum(-1)
    if "max_new_tokens" not in SETTINGS[setting]:  # else every hypothesis is cut at 4 tokens, as it should be
        assert lengths.min() < lengths.max(), "every hypothesis has the same length: the test would not show much"


def rows_per_call(model, run) -> list[int]:
    """Rows given to the output projection (`lm_head`) by each call while `run()` generates."""
    rows: list[int] = []
    project = model.lm_head.forward

    def spy(hidden_states: torch.Tensor) -> torch.Tensor:
        rows.append(hidden_states.shape[0])
        return project(hidden_states)

    with mock.patch.object(model.lm_head, "forward", side_effect=spy), torch.no_grad():
        run()
    return rows


def test_finished_sentences_leave_the_batch(trained):
    """The decoder sees fewer rows as sentences finish; transformers' loop keeps all of them to the end."""
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    ours = rows_per_call(model, lambda: model.generate(**batch, num_beams=4, max_new_tokens=30))
    reference = rows_per_call(
        model,
        lambda: model.generate(
            **batch, num_beams=4, max_new_tokens=30, custom_generate=generation.transformers_decoding_loop
        ),
    )
    assert set(reference) == {48 * 4}
    chunks = -(-48 * 4 // generation.LOGITS_CHUNK_ROWS)  # a step's logits come in chunks of rows
    assert sum(ours[:chunks]) == 48 * 4 and max(ours) <= generation.LOGITS_CHUNK_ROWS
    assert sum(ours) < 0.8 * sum(reference), "finished sentences stayed in the batch"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        (dict(return_dict_in_generate=True, output_scores=True), "return_dict_in_generate"),
        (dict(do_sample=True), "beam sampling"),
        (dict(decoder_input_ids=torch.tensor([[1, 5]] * 2)), "decoder prompt"),
    ],
)
def test_what_it_cannot_do_runs_transformers_loop(trained, kwargs, reason):
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences[:2], padding=True, return_tensors="pt")
    reasons = []
    unsupported_reason = generation.unsupported_reason

    def check(*args):
        reasons.append(unsupported_reason(*args))
        return reasons[-1]

    with (
        mock.patch.object(
            GenerationMixin, "_beam_search", autospec=True, side_effect=GenerationMixin._beam_search
        ) as base,
        mock.patch.object(generation, "unsupported_reason", side_effect=check),
        mock.patch.object(generation, "beam_search") as ours,
        torch.no_grad(),
    ):
        model.generate(**batch, num_beams=3, max_new_tokens=5, **kwargs)
    assert base.call_count == 1 and ours.call_count == 0
    assert reason in reasons[0]


def test_the_paper_setting_runs_our_beam_search(trained):
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences[:2], padding=True, return_tensors="pt")
    with (
        mock.patch.object(GenerationMixin, "_beam_search", autospec=True) as base,
        mock.patch.object(generation, "beam_search", wraps=generation.beam_search) as ours,
        torch.no_grad(),
    ):
        model.generate(**batch, num_beams=4, length_penalty=0.6, early_stopping=True, max_new_tokens=5)
    assert ours.call_count == 1 and base.call_count == 0


def test_pack_token_batches_keeps_every_index_within_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)] + [300]  # one sentence longer than the budget
    batches = length_sorted_batches(lengths, max_tokens=256, max_sentences=20)
    assert sorted(index for batch in batches for index in batch) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 20
        assert longest * len(batch) <= 256 or len(batch) == 1
    order = [index for batch in batches for index in batch]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)  # longest first
    assert batches[0] == [len(lengths) - 1]  # the over-long sentence is a batch of its own
    # Equal lengths keep input order; greedy packing closes a batch only when the next item does not fit.
    assert length_sorted_batches([3, 3, 3, 3], max_tokens=6) == [[0, 1], [2, 3]]
    assert pack_token_batches([0, 1, 2], [[2, 2, 2], [1, 5, 1]], max_tokens=9) == [[0], [1], [2]]
    assert pack_token_batches([0, 1, 2], [[2, 2, 2], [1, 4, 1]], max_tokens=9) == [[0, 1], [2]]


@pytest.mark.parametrize(("max_tokens", "max_sentences"), [(0, None), (10, 0)])
def test_pack_token_batches_refuses_a_non_positive_budget(max_tokens, max_sentences):
    with pytest.raises(ValueError, match="must be positive"):
        length_sorted_batches([1, 2], max_tokens=max_tokens, max_sentences=max_sentences)


def rescored(model, batch, sequences: torch.Tensor, num_return: int, penalty) -> torch.Tensor:
    """Each returned hypothesis' score, recomputed by one teacher-forced forward pass: sum of log p(y_t | y_<t, x)
    over its generated tokens up to and including `</s>`, divided by `penalty(length)`. `(sentences, num_return)`."""
    eos = model.generation_config.eos_token_id
    source = {name: batch[name].repeat_interleave(num_return, dim=0) for name in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**source, decoder_input_ids=sequences[:, :-1]).logits
    log_probs = logits.float().log_softmax(-1).gather(-1, sequences[:, 1:, None])[..., 0]
    generated = sequences[:, 1:]
    ended_before = torch.cumsum(generated == eos, dim=1) - (generated == eos).long()  # EOS seen before this token
    counted = ended_before == 0
    lengths = counted.sum(-1)
    scores = (log_probs * counted).sum(-1) / torch.tensor([penalty(int(n)) for n in lengths])
    return scores.view(-1, num_return)


@pytest.mark.parametrize("alpha", [0.6, 2.0])
def test_gnmt_length_penalty_ranks_hypotheses_by_wu_et_al_eq_14(trained, alpha):
    """length_penalty_type="gnmt": the returned hypotheses of each sentence are in the order of
    sum(log p) / ((5 + |Y|) / 6) ** alpha (GNMT, arXiv:1609.08144 Eq. 14, typed here), recomputed independently by
    a teacher-forced forward pass; the default type orders them by sum(log p) / |Y| ** alpha instead."""
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    orders = {"gnmt": lambda n: ((5 + n) / 6) ** alpha, "length": lambda n: n**alpha}
    outputs = {}
    for name, penalty in orders.items():
        config = copy.deepcopy(model.generation_config)
        config.update(num_beams=4, num_return_sequences=4, length_penalty=alpha, early_stopping=True)
        config.update(max_new_tokens=30)
        config.length_penalty_type = name  # not a transformers field: `update` would ignore it
        with torch.no_grad():
            outputs[name] = model.generate(**batch, generation_config=config)
        scores = rescored(model, batch, outputs[name], 4, penalty)
        assert torch.all(scores[:, :-1] >= scores[:, 1:] - 1e-4), f"{name}: returned out of order"
    assert not torch.equal(outputs["gnmt"], outputs["length"])  # the two normalisations choose differently


def test_gnmt_length_penalty_refuses_transformers_loop_and_unknown_types(trained):
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences[:2], padding=True, return_tensors="pt")
    config = copy.deepcopy(model.generation_config)
    config.update(num_beams=3, max_new_tokens=5, do_sample=True)
    config.length_penalty_type = "gnmt"
    with pytest.raises(ValueError, match="length_penalty_type='gnmt' needs this model's beam search.*beam sampling"):
        model.generate(**batch, generation_config=config)
    config.do_sample, config.length_penalty_type = False, "wu"
    with pytest.raises(ValueError, match="length_penalty_type must be one of"):
        model.generate(**batch, generation_config=config)
