"""Contracts with the private transformers methods this package overrides or hooks into.

* `VaswaniTransformerForConditionalGeneration._expand_inputs_for_generation` overrides
  `GenerationMixin._expand_inputs_for_generation`: the encoder output stays at one row per sentence.
* `VaswaniTransformerForConditionalGeneration._reorder_cache` is the hook that `GenerationMixin._beam_search` calls,
  when a model defines it, instead of `EncoderDecoderCache.reorder_cache`: only the self-attention cache moves.
* `VaswaniTransformerForConditionalGeneration._beam_search` overrides `GenerationMixin._beam_search`, which
  `generate()` looks up on the model's class for beam search; ours runs `generation_vaswani_transformer.beam_search`
  and hands what it cannot do back to the base (`test_beam_search.py` compares the two token for token).
* `VaswaniTransformerTokenizerFast._encode_plus` overrides `TokenizersBackend._encode_plus`: a batch of plain strings
  is encoded straight from `encode_batch`.

For each: the replaced method still exists with the signature the override was written against, generation or the
tokenizer still calls it on the path we rely on, and the override gives what the base gives where the two must agree
(for `_encode_plus`, `test_tokenization.py::test_batch_fast_path_equals_tokenizers_backend` compares the two over
padding, truncation, tensors and the options that fall back to the base class).

Checked against transformers 5.23.0. A failure names the installed version and the transformers method that
changed: re-read it in the installed source and re-check the override against it before changing an expectation.
"""

import copy
import inspect
from unittest import mock

import pytest
import torch
import transformers
from conftest import tiny_config
from transformers import GenerationMixin
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.tokenization_utils_base import TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils.generic import PaddingStrategy

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast


Model = VaswaniTransformerForConditionalGeneration
Tokenizer = VaswaniTransformerTokenizerFast


def contract(message: str) -> str:
    """An assertion message that names the installed transformers and what to re-check."""
    return f"transformers {transformers.__version__}: {message}"


def parameters(function) -> list[tuple[str, str, object]]:
    """(name, kind, default) of each parameter; `**kwargs` under any name is `("**", ...)`."""
    return [
        ("**" if p.kind is p.VAR_KEYWORD else p.name, p.kind.name, p.default)
        for p in inspect.signature(function).parameters.values()
    ]


EMPTY = inspect.Parameter.empty


@pytest.fixture(scope="module")
def model() -> VaswaniTransformerForConditionalGeneration:
    torch.manual_seed(0)
    return VaswaniTransformerForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    input_ids = torch.randint(4, 1000, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# GenerationMixin._expand_inputs_for_generation -----------------------------------------------------------------


def test_expand_inputs_for_generation_signature():
    assert parameters(GenerationMixin._expand_inputs_for_generation) == [
        ("self", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("expand_size", "POSITIONAL_OR_KEYWORD", 1),
        ("is_encoder_decoder", "POSITIONAL_OR_KEYWORD", False),
        ("input_ids", "POSITIONAL_OR_KEYWORD", None),
        ("**", "VAR_KEYWORD", EMPTY),
    ], contract(
        "GenerationMixin._expand_inputs_for_generation changed its signature; re-check the override in "
        "modeling_vaswani_transformer.py, which passes (expand_size, is_encoder_decoder, input_ids, **kwargs) on"
    )


def test_generate_expands_after_encoding_through_our_override(model, source):
    """`generate` calls the override once, with the encoder output already computed; it calls the base."""
    ours, base = Model._expand_inputs_for_generation, GenerationMixin._expand_inputs_for_generation
    with (
        mock.patch.object(Model, "_expand_inputs_for_generation", autospec=True, side_effect=ours) as spy,
        mock.patch.object(
            GenerationMixin, "_expand_inputs_for_generation", autospec=True, side_effect=base
        ) as base_spy,
    ):
        model.generate(**source, num_beams=3, max_new_tokens=3)
    assert spy.call_count == 1, contract("generate() no longer calls _expand_inputs_for_generation once")
    call = inspect.signature(ours).bind(*spy.call_args.args, **spy.call_args.kwargs).arguments
    assert call["expand_size"] == 3 and call["is_encoder_decoder"] is True, contract(
        f"generate() calls _expand_inputs_for_generation with {call}; re-check what the override receives"
    )
    assert call["kwargs"].get("encoder_outputs") is not None, contract(
        "generate() expands its inputs before running the encoder; the override needs `encoder_outputs` to keep "
        "one encoder row per sentence: re-read GenerationMixin.generate"
    )
    assert base_spy.call_count == 1, contract("the override no longer reaches GenerationMixin's method")


def test_expand_inputs_for_generation_agrees_with_the_base(model, source):
    """Everything the base expands is expanded alike, except the encoder output and its mask: one row per sentence."""
    with torch.no_grad():
        encoder_outputs = model.get_encoder()(**source)
    decoder_input_ids = torch.ones(2, 1, dtype=torch.long)
    kwargs = dict(attention_mask=source["attention_mask"], decoder_attention_mask=torch.ones(2, 1), use_cache=True)
    ids, expanded = model._expand_inputs_for_generation(
        3, True, decoder_input_ids, encoder_outputs=copy.copy(encoder_outputs), **kwargs
    )
    base_ids, base_expanded = GenerationMixin._expand_inputs_for_generation(
        model, 3, True, decoder_input_ids, encoder_outputs=copy.copy(encoder_outputs), **kwargs
    )
    message = contract("our _expand_inputs_for_generation disagrees with GenerationMixin's; compare the two")
    assert torch.equal(ids, base_ids) and expanded.keys() == base_expanded.keys(), message
    assert torch.equal(expanded["decoder_attention_mask"], base_expanded["decoder_attention_mask"]), message
    assert expanded["use_cache"] is base_expanded["use_cache"], message
    assert torch.equal(expanded["attention_mask"].repeat_interleave(3, 0), base_expanded["attention_mask"]), message
    shared = expanded["encoder_outputs"].last_hidden_state.repeat_interleave(3, 0)
    assert torch.equal(shared, base_expanded["encoder_outputs"].last_hidden_state), message
    for expand_size, is_encoder_decoder in [(1, True), (3, False)]:  # the cases handed to the base as they are
        ids, expanded = model._expand_inputs_for_generation(expand_size, is_encoder_decoder, decoder_input_ids)
        assert torch.equal(ids, decoder_input_ids.repeat_interleave(expand_size, 0)), message


def test_beam_search_with_the_base_expansion_gives_the_same_translations(model, source):
    kwargs = dict(**source, num_beams=3, num_return_sequences=2, max_new_tokens=6, return_dict_in_generate=True)
    kwargs.update(output_scores=True)
    ours = model.generate(**kwargs)
    with mock.patch.object(Model, "_expand_inputs_for_generation", GenerationMixin._expand_inputs_for_generation):
        base = model.generate(**kwargs)
    assert torch.equal(ours.sequences, base.sequences), contract(
        "beam search with one encoder row per sentence differs from GenerationMixin's expansion"
    )
    torch.testing.assert_close(ours.sequences_scores, base.sequences_scores)


# GenerationMixin._beam_search, overridden --------------------------------------------------------------------------


def test_beam_search_override_has_the_base_signature():
    assert parameters(Model._beam_search) == parameters(GenerationMixin._beam_search), contract(
        "GenerationMixin._beam_search changed its signature; our override (and its call of the base) must follow"
    )
    source = inspect.getsource(transformers.generation.utils)
    assert 'GenerationMode.BEAM_SEARCH: "_beam_search"' in source, contract(
        "generate() no longer dispatches beam search to `_beam_search`"
    )


# GenerationMixin._beam_search -> _reorder_cache ----------------------------------------------------------------


def test_reorder_cache_replaces_encoder_decoder_cache_reorder_cache():
    assert not hasattr(GenerationMixin, "_reorder_cache"), contract(
        "GenerationMixin now defines _reorder_cache itself; our static _reorder_cache overrides it: compare the two"
    )
    for method in (Cache.reorder_cache, EncoderDecoderCache.reorder_cache):
        assert parameters(method) == [
            ("self", "POSITIONAL_OR_KEYWORD", EMPTY),
            ("beam_idx", "POSITIONAL_OR_KEYWORD", EMPTY),
        ], contract(f"{method.__qualname__} changed its signature; our _reorder_cache calls Cache.reorder_cache")
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    assert {"self_attention_cache", "cross_attention_cache"} <= vars(cache).keys(), contract(
        "EncoderDecoderCache no longer holds self_attention_cache and cross_attention_cache"
    )


def test_beam_search_calls_our_reorder_cache_instead_of_the_cache_s(model, source):
    """transformers' loop, which runs where our `beam_search` cannot (here: `return_dict_in_generate`)."""
    ours = Model._reorder_cache
    with (
        mock.patch.object(Model, "_reorder_cache", wraps=ours) as spy,
        mock.patch.object(EncoderDecoderCache, "reorder_cache", autospec=True) as cache_reorder,
    ):
        model.generate(**source, num_beams=3, max_new_tokens=4, return_dict_in_generate=True)
    assert spy.call_count >= 1, contract(
        "beam search no longer calls model._reorder_cache; re-read GenerationMixin._beam_search, which reordered the "
        "cache with `self._reorder_cache(past_key_values, beam_idx)` when the model defines it"
    )
    cache, beam_idx = spy.call_args.args
    assert isinstance(cache, EncoderDecoderCache) and beam_idx.shape == (6,), contract(
        f"_reorder_cache now receives {type(cache).__name__} and beam_idx of shape {tuple(beam_idx.shape)}"
    )
    assert cache_reorder.call_count == 0, contract("beam search calls EncoderDecoderCache.reorder_cache as well")


def test_reorder_cache_agrees_with_encoder_decoder_cache_reorder_cache():
    """With one cross-attention row per beam (all equal within a sentence), both leave the same cache.

    With one cross-attention row per sentence, the base cannot apply; `test_modeling.py::
    test_beam_search_reorders_only_the_self_attention_cache` checks that case.
    """
    torch.manual_seed(0)
    ours = EncoderDecoderCache(DynamicCache(), DynamicCache())
    for layer in range(2):
        self_keys = torch.randn(6, 4, 3, 8)  # (batch * beams, heads, len, head_dim): 2 sentences, 3 beams
        cross_keys = torch.randn(2, 4, 5, 8).repeat_interleave(3, dim=0)  # equal within a sentence
        ours.self_attention_cache.update(self_keys, -self_keys, layer)
        ours.cross_attention_cache.update(cross_keys, 2 * cross_keys, layer)
    base = copy.deepcopy(ours)
    beam_idx = torch.tensor([2, 0, 0, 4, 5, 3])  # beams only move within their sentence
    assert Model._reorder_cache(ours, beam_idx) is ours
    base.reorder_cache(beam_idx)
    for part in ("self_attention_cache", "cross_attention_cache"):
        for got, expected in zip(getattr(ours, part).layers, getattr(base, part).layers, strict=True):
            assert torch.equal(got.keys, expected.keys) and torch.equal(got.values, expected.values), contract(
                f"_reorder_cache and EncoderDecoderCache.reorder_cache disagree on {part}"
            )


# TokenizersBackend._encode_plus ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> VaswaniTransformerTokenizerFast:
    return VaswaniTransformerTokenizerFast.train_from_iterator(["Two dogs run.", "Zwei Hunde rennen."] * 2, 300)


def test_encode_plus_signature():
    """The options our fast path reads from **kwargs, with the defaults it assumes, and no option it does not know."""
    assert parameters(TokenizersBackend._encode_plus) == [
        ("self", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("text", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("text_pair", "POSITIONAL_OR_KEYWORD", None),
        ("add_special_tokens", "POSITIONAL_OR_KEYWORD", True),
        ("padding_strategy", "POSITIONAL_OR_KEYWORD", PaddingStrategy.DO_NOT_PAD),
        ("truncation_strategy", "POSITIONAL_OR_KEYWORD", TruncationStrategy.DO_NOT_TRUNCATE),
        ("max_length", "POSITIONAL_OR_KEYWORD", None),
        ("stride", "POSITIONAL_OR_KEYWORD", 0),
        ("is_split_into_words", "POSITIONAL_OR_KEYWORD", False),
        ("pad_to_multiple_of", "POSITIONAL_OR_KEYWORD", None),
        ("padding_side", "POSITIONAL_OR_KEYWORD", None),
        ("return_tensors", "POSITIONAL_OR_KEYWORD", None),
        ("return_token_type_ids", "POSITIONAL_OR_KEYWORD", None),
        ("return_attention_mask", "POSITIONAL_OR_KEYWORD", None),
        ("return_overflowing_tokens", "POSITIONAL_OR_KEYWORD", False),
        ("return_special_tokens_mask", "POSITIONAL_OR_KEYWORD", False),
        ("return_offsets_mapping", "POSITIONAL_OR_KEYWORD", False),
        ("return_length", "POSITIONAL_OR_KEYWORD", False),
        ("verbose", "POSITIONAL_OR_KEYWORD", True),
        ("split_special_tokens", "POSITIONAL_OR_KEYWORD", None),
        ("**", "VAR_KEYWORD", EMPTY),
    ], contract(
        "TokenizersBackend._encode_plus changed its options or defaults; re-check the defaults and "
        "_BASE_CLASS_OPTIONS of VaswaniTransformerTokenizerFast._encode_plus, which must send every option it does "
        "not implement to the base class"
    )
    helpers = {
        TokenizersBackend.set_truncation_and_padding: [
            "self",
            "padding_strategy",
            "truncation_strategy",
            "max_length",
            "stride",
            "pad_to_multiple_of",
            "padding_side",
        ],
        TokenizersBackend._eventual_warn_about_too_long_sequence: ["self", "ids", "max_length", "verbose"],
    }
    for helper, names in helpers.items():
        assert [name for name, _, _ in parameters(helper)] == names, contract(
            f"{helper.__qualname__}, called by our _encode_plus, changed its signature"
        )


@pytest.mark.parametrize(
    ("args", "kwargs", "fast_path"),
    [
        ((["Two dogs.", "A dog"],), {}, True),
        ((["Two dogs."],), {"text_target": ["Zwei Hunde."], "padding": True, "return_tensors": "pt"}, True),
        ((["Two dogs."],), {"return_offsets_mapping": True}, False),
        (("Two dogs.",), {}, False),
    ],
    ids=["batch", "text_target", "offsets", "one_string"],
)
def test_tokenizer_call_goes_through_our_encode_plus(tokenizer, args, kwargs, fast_path):
    ours, base = Tokenizer._encode_plus, TokenizersBackend._encode_plus
    with (
        mock.patch.object(Tokenizer, "_encode_plus", autospec=True, side_effect=ours) as spy,
        mock.patch.object(TokenizersBackend, "_encode_plus", autospec=True, side_effect=base) as base_spy,
    ):
        tokenizer(*args, **kwargs)
    calls = 2 if "text_target" in kwargs else 1
    assert spy.call_count == calls, contract(
        f"tokenizer(...) called _encode_plus {spy.call_count} times, not {calls}; re-read "
        "PreTrainedTokenizerBase.__call__, which encoded text and text_target with one _encode_plus call each"
    )
    assert base_spy.call_count == (0 if fast_path else calls), contract(
        "the fast path of VaswaniTransformerTokenizerFast._encode_plus and its fall-back to TokenizersBackend split "
        "calls differently than expected"
    )
