"""Never load wrong (issue 11), the model side: a saved model that cannot translate fails loudly, and an empty input
translates to "".

* Case 4: a model directory without `tokenizer.json` used to load a tokenizer of the four special tokens only; every
  word became `<unk>` and the pipeline returned empty translations with exit status 0.
* Case 7: `translator("")` used to send `</s>` to the model and return whatever it generated.
"""

from __future__ import annotations

import json
import sys
import textwrap
from unittest import mock

import pytest
import torch
from conftest import BLOCK_PACKAGE_IMPORT, run_without_package, save_tiny_translation_model
from transformers import AutoTokenizer, Pipeline

from vaswani_transformer import TranslationPipeline
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast


SENTENCES = ["A man is riding a bicycle.", "Two dogs play in the snow near a red house."]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_tokenizer):
    """(directory, model): a tiny model saved with its tokenizer and pipeline."""
    directory = tmp_path_factory.mktemp("tiny_translation_model")
    return directory, save_tiny_translation_model(directory, small_tokenizer)


@pytest.fixture(scope="module")
def translator(saved, small_tokenizer):
    return TranslationPipeline(model=saved[1], tokenizer=small_tokenizer)


# Case 4 ----------------------------------------------------------------------------------------------------------


def test_case4_tokenizer_without_tokenizer_json_names_the_directory(small_tokenizer, tmp_path):
    small_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    expected = (
        f"{tmp_path} has no tokenizer.json: the tokenizer would know only its special tokens (<pad> <s> </s> <unk>) "
        "and encode every word as <unk>."
    )
    with pytest.raises(OSError) as error:
        VaswaniTransformerTokenizerFast.from_pretrained(tmp_path)
    assert str(error.value).startswith(expected)
    with pytest.raises(OSError) as error:
        AutoTokenizer.from_pretrained(tmp_path)  # the class registered by the package
    assert str(error.value).startswith(expected)


def test_case4_tokenizer_with_only_special_tokens_is_refused(tmp_path):
    VaswaniTransformerTokenizerFast().save_pretrained(tmp_path)  # an untrained tokenizer.json
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"] == {
        "<pad>": 0,
        "<s>": 1,
        "</s>": 2,
        "<unk>": 3,
    }
    with pytest.raises(ValueError, match=f"The tokenizer loaded from {tmp_path} has only its special tokens"):
        VaswaniTransformerTokenizerFast.from_pretrained(tmp_path)


def test_case4_tokenizers_built_in_code_are_not_checked(small_tokenizer, tmp_path):
    """Training starts from the four special tokens; only loading a saved tokenizer is checked."""
    assert len(VaswaniTransformerTokenizerFast()) == 4
    trained = VaswaniTransformerTokenizerFast.train_from_iterator(SENTENCES * 2, vocab_size=270)
    trained.save_pretrained(tmp_path)
    assert VaswaniTransformerTokenizerFast.from_pretrained(tmp_path).get_vocab() == trained.get_vocab()


def test_case4_pipeline_refuses_special_tokens_only_tokenizer(saved):
    with pytest.raises(ValueError) as error:
        TranslationPipeline(model=saved[1], tokenizer=VaswaniTransformerTokenizerFast())
    assert str(error.value) == (
        "TranslationPipeline needs a trained tokenizer; VaswaniTransformerTokenizerFast has only special tokens "
        "(<pad> <s> </s> <unk>) in its vocabulary, so every word would be encoded as <unk> and every translation "
        "would be empty"
    )


# Loads tokenizer and pipeline as remote code, in a Python that cannot import the package; prints each error.
LOAD_WITHOUT_TOKENIZER_JSON = BLOCK_PACKAGE_IMPORT + textwrap.dedent(
    """
    import json
    from transformers import AutoTokenizer, pipeline

    errors = {}
    for name, load in [
        ("AutoTokenizer", lambda: AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)),
        ("pipeline", lambda: pipeline("translation", model=sys.argv[1], trust_remote_code=True)(["A man."])),
    ]:
        try:
            errors[name] = repr(load())
        except OSError as error:
            errors[name] = f"{type(error).__name__}: {error}"
    print(json.dumps(errors))
    """
)


def test_case4_remote_code_model_without_tokenizer_json_fails_loudly(saved, tmp_path):
    directory, _ = saved
    copy = tmp_path / "model"
    copy.mkdir()
    for path in directory.iterdir():
        if path.name != "tokenizer.json":
            (copy / path.name).write_bytes(path.read_bytes())
    command = [sys.executable, "-c", LOAD_WITHOUT_TOKENIZER_JSON, str(copy)]
    result = run_without_package(command, cwd=tmp_path, hf_home=tmp_path / "hf_home")
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    expected = f"OSError: {copy} has no tokenizer.json: the tokenizer would know only its special tokens"
    assert errors["AutoTokenizer"].startswith(expected), errors
    assert errors["pipeline"].startswith(expected), errors


# Case 8 (loading) -------------------------------------------------------------------------------------------------


def test_case8_truncated_weights_name_the_file(saved, tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM

    from vaswani_transformer import VaswaniTransformerForConditionalGeneration
    from vaswani_transformer.command_line import run
    from vaswani_transformer.training import evaluate_cli

    directory, _ = saved
    copy = tmp_path / "model"
    copy.mkdir()
    for path in directory.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    expected = f"{weights}: cannot be read (Error while deserializing header: incomplete metadata"
    for load in (VaswaniTransformerForConditionalGeneration.from_pretrained, AutoModelForSeq2SeqLM.from_pretrained):
        with pytest.raises(OSError) as error:
            load(copy)
        assert str(error.value).startswith(expected)
    argv = ["--model", str(copy), "--output_dir", str(tmp_path / "eval")]
    assert run(evaluate_cli.main, argv, "vaswani-evaluate") == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"vaswani-evaluate: error: cannot load --model {copy}: {expected}")
    assert not (tmp_path / "eval").exists()


# Case 7 ----------------------------------------------------------------------------------------------------------


def test_case7_pipeline_empty_input_gives_empty_string(saved, translator):
    _, model = saved
    # What the model makes of "" (`</s>` alone) when it gets it: not an empty string.
    assert Pipeline.__call__(translator, "")[0]["translation_text"] != ""
    with mock.patch.object(model, "generate", wraps=model.generate) as generate:
        assert translator("") == [{"translation_text": ""}]
        assert translator(" \t\n") == [{"translation_text": ""}]
        assert translator(["", "  "], batch_size=2) == [{"translation_text": ""}, {"translation_text": ""}]
        assert generate.call_count == 0
        mixed = translator(["", SENTENCES[0], "  ", SENTENCES[1]], batch_size=2)
        rows = [call.kwargs["input_ids"].shape[0] for call in generate.call_args_list]
    assert rows == [2]  # one batch holding the two sentences, none of the blank inputs
    expected = translator(SENTENCES, batch_size=2)
    assert expected[0]["translation_text"] and expected[1]["translation_text"]
    assert mixed == [{"translation_text": ""}, expected[0], {"translation_text": ""}, expected[1]]


def test_case7_empty_input_follows_the_call_s_output_options(saved, translator):
    _, model = saved
    records = translator("", return_tensors=True, num_beams=3, num_return_sequences=2)
    assert len(records) == 2
    for record in records:
        assert record["translation_text"] == "" and record["translation_token_ids"].shape == (0,)
        assert record["translation_token_ids"].dtype == torch.long
    several = translator(
        ["", SENTENCES[0]], num_beams=3, num_return_sequences=2, return_tensors=True, return_text=False
    )
    assert [len(records) for records in several] == [2, 2]
    assert all(set(record) == {"translation_token_ids"} for records in several for record in records)
    model.generation_config.num_return_sequences = 3  # the model's own default applies to blank inputs too
    try:
        assert translator(" ", num_beams=3) == [{"translation_text": ""}] * 3
    finally:
        model.generation_config.num_return_sequences = 1


def test_case7_constructor_generation_parameters_apply_to_empty_input(saved, small_tokenizer):
    pipe = TranslationPipeline(model=saved[1], tokenizer=small_tokenizer, num_beams=2, num_return_sequences=2)
    assert pipe("") == [{"translation_text": ""}] * 2
