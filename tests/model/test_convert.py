"""`to_marian` is the inverse of `from_marian`: the same weights, the same logits and translations, clear refusals."""

import pytest
import torch
from conftest import tiny_config
from transformers import MarianMTModel

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.convert import from_marian, to_marian


# The architectures Marian can hold: the paper's (tied, interleaved), Marian's own layout, three separate embedding
# matrices, unscaled embeddings with stacks of different shapes.
CONVERTIBLE = {
    "paper": {},
    "concatenated": dict(positional_encoding_layout="concatenated"),
    "untied": dict(tie_word_embeddings=False),
    "unequal_stacks": dict(
        scale_embedding=False, encoder_layers=3, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=48
    ),
}


def make_model(seed: int = 0, **overrides) -> VaswaniTransformerForConditionalGeneration:
    torch.manual_seed(seed)
    return VaswaniTransformerForConditionalGeneration(tiny_config(**overrides)).eval()


def random_inputs(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three sources (one padded) and their decoder inputs, ids above the special tokens."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (3, 9), generator=generator)  # (batch, src_len)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    decoder_input_ids = torch.randint(3, vocab_size, (3, 7), generator=generator)  # (batch, tgt_len)
    decoder_input_ids[:, 0] = 1  # <s>
    return dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)


@pytest.mark.parametrize("overrides", CONVERTIBLE.values(), ids=CONVERTIBLE.keys())
def test_round_trip_gives_the_same_weights_and_architecture(overrides):
    ours = make_model(**overrides)
    marian = to_marian(ours)
    assert isinstance(marian, MarianMTModel) and not marian.training
    back = from_marian(marian)

    expected, got = ours.state_dict(), back.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    architecture = ours.config.to_dict()
    for name in ("label_smoothing", "transformers_version"):  # Marian has no label smoothing
        architecture.pop(name)
    assert {name: back.config.to_dict()[name] for name in architecture} == architecture
    assert (marian.lm_head.weight is marian.model.shared.weight) == ours.config.tie_word_embeddings


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("overrides", CONVERTIBLE.values(), ids=CONVERTIBLE.keys())
def test_marian_twin_computes_our_logits_within_fp32_noise(overrides, attn_implementation):
    ours = make_model(**overrides)
    ours.config._attn_implementation = attn_implementation
    marian = to_marian(ours)
    assert marian.config._attn_implementation == attn_implementation
    inputs = random_inputs(ours.config.vocab_size)
    with torch.no_grad():
        expected = ours(**inputs)
        got = marian(**inputs)
        # fp32 noise floor: how far Marian's own fp32 result lies from its fp64 result on the same input.
        reference = to_marian(make_model(**overrides)).double()(**inputs)
    for name in ("encoder_last_hidden_state", "logits"):
        noise = (getattr(got, name).double() - getattr(reference, name)).abs().max().item()
        assert noise > 0
        error = (getattr(got, name).double() - getattr(expected, name).double()).abs().max().item()
        assert error <= 4 * noise, f"{name}: |marian - ours| = {error:.3g} exceeds 4x the fp32 noise {noise:.3g}"


@pytest.mark.parametrize("num_beams", [1, 4])
def test_marian_twin_translates_real_sentences_token_for_token(num_beams, small_tokenizer, real_sentences):
    # Large weights (init_std 0.5): varied, non-degenerate random translations.
    ours = make_model(seed=1, vocab_size=len(small_tokenizer), init_std=0.5)
    marian = to_marian(ours)
    batch = small_tokenizer(real_sentences["en"], padding=True, return_tensors="pt")
    kwargs = dict(batch, num_beams=num_beams, max_new_tokens=20, do_sample=False)
    expected = ours.generate(**kwargs)
    assert expected.shape[1] > 5 and len(set(expected[:, 1:].flatten().tolist())) > 5  # not a degenerate output
    assert torch.equal(marian.generate(**kwargs), expected)


def test_to_marian_refuses_what_marian_cannot_represent():
    with pytest.raises(ValueError, match="layer_norm_position='pre'"):
        to_marian(make_model(layer_norm_position="pre"))
    with pytest.raises(ValueError, match="layer_norm_eps"):
        to_marian(make_model(layer_norm_eps=1e-6))
    with pytest.raises(TypeError, match="VaswaniTransformerForConditionalGeneration"):
        to_marian(to_marian(make_model()))


def test_from_marian_refuses_positions_that_are_not_sinusoids():
    marian = to_marian(make_model())
    with torch.no_grad():
        marian.model.decoder.embed_positions.weight[3, 0] += 0.5
    with pytest.raises(ValueError, match="positional tables"):
        from_marian(marian)
