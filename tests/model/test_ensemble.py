"""`vaswani_transformer.ensemble`: several models decode as one by the mean of their probabilities at each step.

References: a model alone (an ensemble of a model with itself must give exactly its output and scores), and for two
different models a naive greedy decoder written here (full forward passes of both models over the growing output,
argmax of the log of their mean softmax, fairseq's rule) and the ensemble's own teacher-forced scores.
"""

from __future__ import annotations

import copy

import pytest
import torch

from vaswani_transformer.ensemble import EnsembleModel


PAPER_DECODING = dict(num_beams=4, length_penalty=0.6, early_stopping=True, max_new_tokens=30)


@pytest.fixture(scope="module")
def other(trained):
    """A second, different model of the same vocabulary: conftest's `trained` with noise on every weight."""
    model, _, _ = trained
    torch.manual_seed(1)
    second = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.add_(0.1 * parameter.std() * torch.randn_like(parameter))
    return second.eval()


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_a_model_with_itself_gives_exactly_its_output(trained, search):
    model, tokenizer, sentences = trained
    kwargs = dict(PAPER_DECODING, num_beams=1) if search == "greedy" else dict(PAPER_DECODING, num_return_sequences=2)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        alone = model.generate(**batch, **kwargs)
        together = EnsembleModel([model, model]).generate(**batch, **kwargs)
    assert torch.equal(together, alone)
    labels = tokenizer(text_target=sentences[::-1][:8], padding=True, return_tensors="pt")["input_ids"]
    labels = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
    source = {name: batch[name][:8] for name in ("input_ids", "attention_mask")}
    single = model.score(source["input_ids"], labels, source["attention_mask"])
    double = EnsembleModel([model, model]).score(source["input_ids"], labels, source["attention_mask"])
    assert torch.equal(double.token_log_probs, single.token_log_probs)


def naive_greedy(models, source_ids: torch.Tensor, start: int, eos: int, max_new_tokens: int) -> list[int]:
    """One sentence, no cache: at each step every model reads the whole output so far; the next token is the argmax
    of log(mean softmax)."""
    output = [start]
    with torch.no_grad():
        for _ in range(max_new_tokens):
            probs = [
                model(input_ids=source_ids, decoder_input_ids=torch.tensor([output])).logits[0, -1].float().softmax(-1)
                for model in models
            ]
            output.append(int(torch.stack(probs).mean(0).log().argmax()))
            if output[-1] == eos:
                break
    return output


def test_two_models_greedy_equals_a_naive_ensemble_decoder(trained, other):
    model, tokenizer, sentences = trained
    ensemble = EnsembleModel([model, other])
    batch = tokenizer(sentences[:12], padding=True, return_tensors="pt")
    with torch.no_grad():
        rows = ensemble.generate(**batch, num_beams=1, max_new_tokens=30).tolist()
        alone = model.generate(**batch, num_beams=1, max_new_tokens=30).tolist()
    start, eos = model.config.decoder_start_token_id, tokenizer.eos_token_id
    for row, sentence in zip(rows, sentences[:12], strict=True):
        source_ids = tokenizer([sentence], return_tensors="pt")["input_ids"]
        expected = naive_greedy([model, other], source_ids, start, eos, 30)
        assert row[: len(expected)] == expected
        assert all(token == tokenizer.pad_token_id for token in row[len(expected) :])
    assert rows != alone, "the ensemble translates as the first model alone"


def test_two_models_beam_search_differs_and_is_ranked_by_the_ensemble_scores(trained, other):
    """Valid output: every hypothesis ends with `</s>` or at max_new_tokens, and its rank follows the ensemble's
    teacher-forced scores."""
    model, tokenizer, sentences = trained
    ensemble = EnsembleModel([model, other])
    batch = tokenizer(sentences[:12], padding=True, return_tensors="pt")
    with torch.no_grad():
        together = ensemble.generate(**batch, **PAPER_DECODING, num_return_sequences=4)
        first = model.generate(**batch, **PAPER_DECODING)
    assert not torch.equal(together[::4], first), "the ensemble translates as the first model alone"
    labels = together[:, 1:]
    is_eos = labels == tokenizer.eos_token_id
    assert torch.all(is_eos.any(-1) | (labels.shape[1] == 30)), "a hypothesis cut short without </s>"
    assert is_eos.any(-1).float().mean() > 0.5
    labels = labels.masked_fill((torch.cumsum(is_eos, -1) - is_eos.long()) > 0, -100)
    sources = {name: batch[name].repeat_interleave(4, dim=0) for name in ("input_ids", "attention_mask")}
    scores = ensemble.score(sources["input_ids"], labels, sources["attention_mask"], length_penalty=0.6)
    ranked = scores.sequences_scores.view(12, 4)
    assert torch.all(ranked[:, :-1] >= ranked[:, 1:] - 1e-5)


def test_ensembles_refuse_sampling_and_other_vocabularies(trained, other):
    model, tokenizer, sentences = trained
    batch = tokenizer(sentences[:2], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="greedy or beam search"):
        EnsembleModel([model, other]).generate(**batch, do_sample=True, max_new_tokens=5)
    smaller = copy.deepcopy(other)
    smaller.config.vocab_size = model.config.vocab_size - 1
    with pytest.raises(ValueError, match="Model 1 of the ensemble has vocab_size="):
        EnsembleModel([model, smaller])
