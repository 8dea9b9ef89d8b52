"""`decoding_vaswani_transformer`: scoring given translations and target prefixes, against independent references.

Scores are checked against the log-probabilities transformers' own beam search reports for its hypotheses
(`return_dict_in_generate`, `compute_transition_scores`, `sequences_scores`) and against CTranslate2's
`score_batch`; prefixed translations against CTranslate2's `target_prefix` on the exported model. The model is
conftest's `trained` (300 steps on real Multi30k pairs, so that beams end at different steps).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GenerationConfig

from vaswani_transformer import generation_vaswani_transformer as generation
from vaswani_transformer.decoding_vaswani_transformer import log_mean_exp


PAPER_DECODING = dict(num_beams=4, length_penalty=0.6, early_stopping=True, max_new_tokens=30)


def labels_of(sequences: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """`(rows, out_len)` generated ids (start token first) -> `(rows, out_len - 1)` labels, -100 after `</s>`."""
    labels = sequences[:, 1:]
    is_eos = labels == eos_token_id
    after_end = (torch.cumsum(is_eos, dim=-1) - is_eos.long()) > 0
    return labels.masked_fill(after_end, -100)


@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_scores_equal_what_beam_search_reports_for_its_hypotheses(trained, alpha):
    """Per token: transformers' `compute_transition_scores` of its own beam search; per sentence: its
    `sequences_scores` (sum / length ** alpha), within 1e-4 in fp32, for all 3 returned hypotheses."""
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences[:16], padding=True, return_tensors="pt")
    kwargs = dict(PAPER_DECODING, length_penalty=alpha, num_return_sequences=3)
    with torch.no_grad():
        out = model.generate(**batch, **kwargs, output_scores=True, return_dict_in_generate=True)
        fast = model.generate(**batch, **kwargs)  # our beam search: the same hypotheses
    assert torch.equal(fast, out.sequences)
    reference = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    labels = labels_of(out.sequences, tokenizer.eos_token_id)
    sources = {name: batch[name].repeat_interleave(3, dim=0) for name in ("input_ids", "attention_mask")}
    scored = model.score(sources["input_ids"], labels, sources["attention_mask"], length_penalty=alpha)
    torch.testing.assert_close(scored.token_log_probs, reference[:, : labels.shape[1]], rtol=0, atol=1e-4)
    torch.testing.assert_close(scored.sequences_scores, out.sequences_scores, rtol=0, atol=1e-4)
    assert len(set(scored.lengths.tolist())) > 3, "hypotheses of one length: the normalisation is not tested"


def test_scores_use_the_generation_config_and_gnmt_penalty(trained):
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences[:4], text_target=sentences[4:8], padding=True, return_tensors="pt")
    labels = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)
    config = GenerationConfig(**model.generation_config.to_diff_dict(), length_penalty=0.6)
    plain = model.score(batch["input_ids"], labels, batch["attention_mask"], generation_config=config)
    total = plain.token_log_probs.sum(-1)
    torch.testing.assert_close(plain.sequences_scores, total / plain.lengths.float() ** 0.6)
    config.length_penalty_type = "gnmt"  # Wu et al. 2016 Eq. 14
    gnmt = model.score(batch["input_ids"], labels, batch["attention_mask"], generation_config=config)
    torch.testing.assert_close(gnmt.sequences_scores, total / ((5 + plain.lengths.float()) / 6) ** 0.6)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """conftest's trained model with the paper's decoding, exported to CTranslate2 in float32."""
    pytest.importorskip("ctranslate2")
    from vaswani_transformer.export import Translator, export_ctranslate2

    model, tokenizer, _ = trained
    model_dir = tmp_path_factory.mktemp("trained")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    GenerationConfig(**{**model.generation_config.to_diff_dict(), **PAPER_DECODING}).save_pretrained(model_dir)
    return Translator(export_ctranslate2(model_dir, tmp_path_factory.mktemp("ct2") / "model"))


def test_scores_equal_ctranslate2_score_batch(trained, exported):
    model, tokenizer, sentences = trained
    targets = [sentence[::-1] for sentence in sentences[8:16]]  # any target: scoring is teacher forcing
    batch = tokenizer(sentences[:8], text_target=targets)
    theirs = exported.score(batch["input_ids"], batch["labels"])
    padded = tokenizer.pad({"input_ids": batch["input_ids"]}, return_tensors="pt")
    longest = max(len(labels) for labels in batch["labels"])
    labels = torch.tensor([labels + [-100] * (longest - len(labels)) for labels in batch["labels"]])
    ours = model.score(padded["input_ids"], labels, padded["attention_mask"])
    for row, reference in enumerate(theirs):
        torch.testing.assert_close(
            ours.token_log_probs[row, : len(reference)], torch.tensor(reference), rtol=0, atol=1e-4
        )
        assert torch.all(ours.token_log_probs[row, len(reference) :] == 0)


def prefixes_of(tokenizer, references: list[str]) -> list[list[int]]:
    """Forced prefixes of 0 to 3 tokens of the references (without `</s>`), different per sentence."""
    ids = tokenizer(text_target=references)["input_ids"]
    return [row[: index % 4] for index, row in enumerate(ids)]


@pytest.mark.parametrize("search", ["greedy", "paper: beam 4, alpha 0.6"])
def test_target_prefix_equals_ctranslate2(trained, exported, search, multi30k_dir):
    from conftest import read_multi30k

    model, tokenizer, sentences = trained
    references = read_multi30k(multi30k_dir, "val", "de", len(sentences))
    prefixes = prefixes_of(tokenizer, references)
    kwargs = dict(PAPER_DECODING, num_beams=1) if search == "greedy" else PAPER_DECODING
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        rows = model.generate(**batch, **kwargs, target_prefix=prefixes).tolist()
    eos = tokenizer.eos_token_id
    ours = [row[1 : row.index(eos, 1) + 1] if eos in row[1:] else row[1:] for row in rows]
    options = {"num_beams": kwargs["num_beams"], "max_new_tokens": 30, "length_penalty": 0.6}
    theirs = exported.generate(tokenizer(sentences)["input_ids"], target_prefix=prefixes, **options)
    assert ours == theirs
    assert all(row[: len(prefix)] == prefix for row, prefix in zip(ours, prefixes, strict=True))
    with torch.no_grad():
        free = model.generate(**batch, **kwargs)
    assert len(free[0]) != len(rows[0]) or not torch.equal(free, torch.tensor(rows)), "the prefix changed nothing"


def test_target_prefix_in_transformers_loop_equals_ours(trained):
    """Where transformers' beam loop runs (return_dict_in_generate), the prefix is forced by a logits processor
    and gives the same hypotheses as our beam search's own forcing."""
    model, tokenizer, sentences = trained
    prefixes = prefixes_of(tokenizer, sentences[::-1])[:12]
    batch = tokenizer(sentences[:12], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model.generate(**batch, **PAPER_DECODING, target_prefix=prefixes)
        reference = model.generate(**batch, **PAPER_DECODING, target_prefix=prefixes, return_dict_in_generate=True)
    assert torch.equal(ours, reference.sequences)
    with pytest.raises(ValueError, match="one prefix per sentence"):
        model.generate(**batch, **PAPER_DECODING, target_prefix=prefixes[:3])


def test_default_path_takes_no_prefix_loop(trained):
    """Without a prefix, generate() picks the plain loops (the default path is unchanged)."""
    model, _, _ = trained
    assert generation.decoding_loop_for(model, (), dict(num_beams=4)) is generation.beam_search_loop
    assert generation.decoding_loop_for(model, (), dict(num_beams=1)) is None


def test_log_mean_exp_is_the_log_of_the_mean_probability():
    torch.manual_seed(0)
    members = [torch.randn(3, 7).log_softmax(-1) for _ in range(3)]
    expected = torch.stack([member.exp() for member in members]).mean(0).log()
    torch.testing.assert_close(log_mean_exp(members), expected)
    same = copy.deepcopy(members[0])
    assert torch.equal(log_mean_exp([same, same, same]), same)  # a model with itself: exactly the model
