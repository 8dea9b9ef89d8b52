"""Contracts with the transformers APIs this package hooks into, and the private methods it calls or overrides.

* `generate(custom_generate=<callable>)` runs the callable as its decoding loop after preparing the inputs; our
  `generate` hands it `generation_vaswani_transformer.beam_search_loop` for beam search (`test_beam_search.py`
  compares the token ids with transformers' own loop).
* `GenerationMixin._beam_search` is called (not overridden) by `beam_search_loop` where our loop cannot stand in.
* `VaswaniTransformerTokenizerFast._encode_plus` overrides `TokenizersBackend._encode_plus`: a batch of plain strings
  is encoded straight from `encode_batch`.

For each: the replaced method still exists with the signature the override was written against, generation or the
tokenizer still calls it on the path we rely on, and the override gives what the base gives where the two must agree
(for `_encode_plus`, `test_tokenization.py::test_batch_fast_path_equals_tokenizers_backend` compares the two over
padding, truncation, tensors and the options that fall back to the base class).

Checked against transformers 5.23.0. A failure names the installed version and the transformers method that
changed: re-read it in the installed source and re-check the override against it before changing an expectation.
"""

import inspect
from unittest import mock

import pytest
import torch
import transformers
from conftest import tiny_config
from transformers import GenerationMixin
from transformers.generation.utils import GENERATION_MODES_MAPPING, GenerationMode
from transformers.tokenization_utils_base import TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils.generic import PaddingStrategy

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer import generation_vaswani_transformer as generation
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


# generate(custom_generate=<callable>) and GenerationMixin._beam_search ------------------------------------------


def test_generate_hands_the_decoding_loop_to_a_custom_generate_callable():
    """`generate` prepares everything, then calls a callable `custom_generate` with the model, the decoder start ids,
    the prepared logits processors and stopping criteria, the generation config and the model kwargs."""
    source = inspect.getsource(GenerationMixin.generate)
    assert "isinstance(custom_generate, Callable)" in source and "decoding_method = custom_generate" in source, (
        contract("generate() no longer runs a callable custom_generate as its decoding loop")
    )


def test_beam_search_signature():
    """`beam_search_loop` calls `GenerationMixin._beam_search` (never overrides it) where our loop cannot stand in,
    and `transformers_decoding_loop` calls it on purpose; both pass these arguments."""
    assert parameters(GenerationMixin._beam_search) == [
        ("self", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("input_ids", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("logits_processor", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("stopping_criteria", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("generation_config", "POSITIONAL_OR_KEYWORD", EMPTY),
        ("synced_gpus", "POSITIONAL_OR_KEYWORD", False),
        ("**", "VAR_KEYWORD", EMPTY),
    ], contract("GenerationMixin._beam_search changed its signature; re-check beam_search_loop's call of it")
    assert GENERATION_MODES_MAPPING[GenerationMode.BEAM_SEARCH] == "_beam_search", contract(
        "generate() no longer dispatches beam search to `_beam_search`"
    )


def test_beam_search_runs_our_loop_and_its_fallback_runs_transformers(model, source):
    """num_beams > 1 runs `beam_search`; a call it cannot run (return_dict_in_generate) runs transformers' loop;
    greedy decoding runs transformers' loop without a custom_generate."""
    with mock.patch.object(generation, "beam_search", wraps=generation.beam_search) as ours:
        with mock.patch.object(
            GenerationMixin, "_beam_search", autospec=True, side_effect=GenerationMixin._beam_search
        ) as base:
            model.generate(**source, num_beams=3, max_new_tokens=5)
            assert (ours.call_count, base.call_count) == (1, 0)
            model.generate(**source, num_beams=3, max_new_tokens=5, return_dict_in_generate=True)
            assert (ours.call_count, base.call_count) == (1, 1), contract(
                "the fallback no longer reaches _beam_search"
            )
    with mock.patch.object(GenerationMixin, "_sample", autospec=True, side_effect=GenerationMixin._sample) as sample:
        model.generate(**source, max_new_tokens=5)
    assert sample.call_count == 1


def test_our_beam_search_gets_one_encoder_row_per_beam_from_generate(model, source):
    """`generate` repeats the encoder output per beam (beams of a sentence in adjacent rows) before the decoding
    loop; `beam_search_loop` keeps every `num_beams`-th row. Checked on what generate hands the loop."""
    seen = {}

    def spy(model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
        seen.update(model_kwargs, input_ids=input_ids)
        return generation.beam_search_loop(
            model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs
        )

    model.generate(**source, num_beams=3, max_new_tokens=5, custom_generate=spy)
    encoder = model.get_encoder()(**source).last_hidden_state  # (2, src_len, d_model)
    assert seen["input_ids"].shape[0] == 6, contract("generate no longer expands the decoder inputs per beam")
    torch.testing.assert_close(seen["encoder_outputs"][0], encoder.repeat_interleave(3, dim=0))
    assert torch.equal(seen["attention_mask"], source["attention_mask"].repeat_interleave(3, dim=0))


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
