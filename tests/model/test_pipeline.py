"""The translation pipeline shipped with the model (`vaswani_transformer/pipeline_translation.py`).

transformers 5.x has no "translation" pipeline; ours travels in the saved model directory (`config.custom_pipelines`
+ the copied file). Covered: string and list inputs, batching, generation parameters, truncation, the 4.x output
format, equality with `generate` + `batch_decode`, both ways of saving, and loading without the package, from a
directory and by repo id from an offline Hugging Face cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import textwrap
from pathlib import Path

import conftest
import pytest
import torch
from conftest import BLOCK_PACKAGE_IMPORT, generate_texts, save_tiny_translation_model

from vaswani_transformer.batching_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from vaswani_transformer.pipeline_translation import (
    TranslationPipeline,
    save_translation_pipeline,
    translation_custom_pipelines,
)


SENTENCES = ["A man is riding a bicycle.", "Two dogs play in the snow near a red house.", "A girl."]


def add_to_hub_cache(model_dir: Path, hf_home: Path, repo_id: str) -> str:
    """Lay `model_dir` out in `hf_home/hub` as huggingface_hub stores a downloaded model repository.

    `models--{org}--{name}/blobs/<hash>` holds each file's bytes, `snapshots/<commit>/<file>` is a relative symlink
    to its blob, and `refs/main` holds the commit (the layout `hf_hub_download` writes and `scan_cache_dir` reads).
    Returns the 40-hex commit hash (derived from the files, so it changes when they change).
    """
    from huggingface_hub.file_download import repo_folder_name

    files = sorted(path for path in model_dir.iterdir() if path.is_file())
    commit = hashlib.sha1(b"".join(hashlib.sha256(path.read_bytes()).digest() for path in files)).hexdigest()
    repo = hf_home / "hub" / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in files:
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_tokenizer):
    """(directory, model, tokenizer): one tiny model saved with its tokenizer and pipeline, shared by the module."""
    directory = tmp_path_factory.mktemp("tiny_translation_model")
    model = save_tiny_translation_model(directory, small_tokenizer)
    return directory, model, small_tokenizer


@pytest.fixture(scope="module")
def translator(saved):
    _, model, tokenizer = saved
    return TranslationPipeline(model=model, tokenizer=tokenizer)


def test_string_gives_a_list_with_one_dict_equal_to_generate(saved, translator):
    _, model, tokenizer = saved
    for sentence in SENTENCES:
        assert translator(sentence) == [{"translation_text": generate_texts(model, tokenizer, [sentence])[0]}]


@pytest.mark.parametrize(("batch_size", "max_tokens"), [(1, None), (2, None), (3, None), (None, 12), (None, 1)])
def test_list_gives_one_dict_per_input_in_order(saved, translator, batch_size, max_tokens):
    _, model, tokenizer = saved
    options = {"batch_size": batch_size} if batch_size else {"max_tokens": max_tokens}
    outputs = translator(SENTENCES, **options)
    assert isinstance(outputs, list) and len(outputs) == len(SENTENCES)
    assert all(isinstance(output, dict) and set(output) == {"translation_text"} for output in outputs)
    # The pipeline translates the longest sentences first, in groups of `batch_size` sentences or `max_tokens` padded
    # tokens, each padded as the tokenizer pads, and puts the results back in input order.
    lengths = [len(ids) for ids in tokenizer(SENTENCES)["input_ids"]]
    expected = [""] * len(SENTENCES)
    for group in length_sorted_batches(lengths, max_tokens or DEFAULT_MAX_TOKENS, batch_size):
        assert len(group) == 1 or max_tokens is None or max(lengths[i] for i in group) * len(group) <= max_tokens
        for index, text in zip(group, generate_texts(model, tokenizer, [SENTENCES[i] for i in group]), strict=True):
            expected[index] = text
    assert [output["translation_text"] for output in outputs] == expected


@pytest.mark.parametrize("options", [{"max_tokens": 0}, {"batch_size": 0}, {"max_tokens": 2.5}])
def test_batching_limits_must_be_positive_integers(translator, options):
    with pytest.raises(ValueError, match="must be a positive integer"):
        translator(SENTENCES, **options)


def test_defaults_come_from_the_generation_config_and_kwargs_override_them(saved, translator):
    _, model, tokenizer = saved
    ids = translator(SENTENCES[1], return_tensors=True, return_text=False)[0]["translation_token_ids"]
    assert ids.ndim == 1 and len(ids) == 1 + model.generation_config.max_new_tokens  # <s> + 6 new tokens
    short = translator(SENTENCES[1], max_new_tokens=2, return_tensors=True)[0]
    assert len(short["translation_token_ids"]) == 1 + 2
    assert short["translation_text"] == tokenizer.decode(short["translation_token_ids"], skip_special_tokens=True)
    beam = translator(SENTENCES[1], num_beams=3, max_new_tokens=4)
    assert beam == [
        {"translation_text": generate_texts(model, tokenizer, [SENTENCES[1]], num_beams=3, max_new_tokens=4)[0]}
    ]


def test_constructor_generation_kwargs_apply_to_every_call(saved):
    _, model, tokenizer = saved
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer, max_new_tokens=3, return_tensors=True)
    assert [len(out["translation_token_ids"]) for out in pipe(SENTENCES[:2], batch_size=2)] == [4, 4]
    assert len(pipe(SENTENCES[0], max_new_tokens=5)[0]["translation_token_ids"]) == 6  # the call wins


def test_several_returned_sequences_give_lists_like_transformers_4(saved, translator):
    _, model, tokenizer = saved
    single = translator(SENTENCES[0], num_beams=3, num_return_sequences=2)
    assert len(single) == 2 and all(set(record) == {"translation_text"} for record in single)
    batch = tokenizer([SENTENCES[0]], return_tensors="pt")
    with torch.no_grad():
        expected = model.generate(**batch, num_beams=3, num_return_sequences=2)
    assert [record["translation_text"] for record in single] == tokenizer.batch_decode(
        expected, skip_special_tokens=True
    )
    several = translator(SENTENCES, num_beams=3, num_return_sequences=2, batch_size=2)
    assert len(several) == 3 and all(isinstance(records, list) and len(records) == 2 for records in several)


def test_over_long_input_is_truncated_with_a_warning(saved, translator, caplog):
    _, model, tokenizer = saved
    sentence = SENTENCES[1]
    length = len(tokenizer(sentence).input_ids)
    assert length > 5
    with caplog.at_level(logging.WARNING, logger="vaswani_transformer.pipeline_translation"):
        output = translator(sentence, max_source_length=5)
    assert f"Input of {length} tokens is longer than max_source_length=5 tokens" in caplog.text
    truncated = tokenizer(sentence, truncation=True, max_length=5, return_tensors="pt")
    assert truncated.input_ids.shape[1] == 5 and truncated.input_ids[0, -1] == tokenizer.eos_token_id
    with torch.no_grad():
        expected = tokenizer.decode(model.generate(**truncated)[0], skip_special_tokens=True)
    assert output == [{"translation_text": expected}]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vaswani_transformer.pipeline_translation"):
        assert translator(sentence, max_source_length=5, truncation=False) == translator(sentence)
        translator(sentence, max_source_length=length)  # exactly at the limit: no warning
    assert "longer than" not in caplog.text


def test_bad_inputs_are_clear_errors(saved, translator):
    with pytest.raises(ValueError, match="list holds a int"):
        translator(["fine", 3])
    with pytest.raises(ValueError, match="string or a list of strings, got dict"):
        translator({"text": "x"})
    with pytest.raises(ValueError, match="max_source_length must be a positive integer, got 0"):
        translator("x", max_source_length=0)


def test_both_ways_of_saving_write_the_same_pipeline(saved, tmp_path):
    directory, model, tokenizer = saved
    TranslationPipeline(model=model, tokenizer=tokenizer).save_pretrained(tmp_path)  # transformers' mechanism
    written = json.loads((tmp_path / "config.json").read_text())["custom_pipelines"]
    ours = json.loads((directory / "config.json").read_text())["custom_pipelines"]
    assert written == ours == translation_custom_pipelines()
    assert ours == {
        "translation": {"impl": "pipeline_translation.TranslationPipeline", "pt": ["AutoModelForSeq2SeqLM"]}
    }
    source = Path(sys.modules[TranslationPipeline.__module__].__file__).read_bytes()
    assert (tmp_path / "pipeline_translation.py").read_bytes() == (directory / "pipeline_translation.py").read_bytes()
    assert (directory / "pipeline_translation.py").read_bytes() == source


def test_save_translation_pipeline_needs_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json not found"):
        save_translation_pipeline(tmp_path)


def test_builtin_translation_task_is_gone_from_transformers():
    """Why the pipeline travels with the model: without `custom_pipelines`, transformers refuses the task."""
    from transformers import pipeline

    with pytest.raises(KeyError, match="translation has been removed"):
        pipeline("translation", model=None)


# Runs in a fresh interpreter that cannot import `vaswani_transformer`: the model, tokenizer and pipeline classes
# must all come from the files in the model directory (or the cached repository).
LOAD_WITHOUT_PACKAGE = BLOCK_PACKAGE_IMPORT + textwrap.dedent(
    """
    import json
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

    name, sentences = sys.argv[1], json.loads(sys.argv[2])
    model = AutoModelForSeq2SeqLM.from_pretrained(name, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=True)
    translator = pipeline("translation", model=name, trust_remote_code=True)
    modules = [type(obj).__module__ for obj in (model, tokenizer, translator)]
    assert all(module.startswith("transformers_modules.") for module in modules), modules
    print(json.dumps({"pipeline": translator(sentences, batch_size=2), "single": translator(sentences[0])}))
    """
)


def run_without_package(name: str, cwd: Path, hf_home: Path) -> dict:
    """Run LOAD_WITHOUT_PACKAGE for `name` (a directory or repo id) offline, outside the checkout, no PYTHONPATH."""
    command = [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, name, json.dumps(SENTENCES)]
    # A tiny model: threads only contend on a busy machine.
    result = conftest.run_without_package(command, cwd=cwd, hf_home=hf_home, OMP_NUM_THREADS="1")
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pipeline_loads_from_a_directory_without_the_package(saved, translator, tmp_path):
    directory, _, _ = saved
    shutil.copytree(directory, tmp_path / "model")
    remote = run_without_package("model", tmp_path, tmp_path / "hf_home")
    assert remote == {"pipeline": translator(SENTENCES, batch_size=2), "single": translator(SENTENCES[0])}


def test_pipeline_loads_by_repo_id_from_the_offline_cache_without_the_package(saved, translator, tmp_path):
    from huggingface_hub import scan_cache_dir

    directory, _, _ = saved
    hf_home = tmp_path / "hf_home"
    commit = add_to_hub_cache(directory, hf_home, "vaswani-org/tiny-transformer-en-de")
    (cached,) = scan_cache_dir(hf_home / "hub").repos  # huggingface_hub itself recognises the layout
    assert cached.repo_id == "vaswani-org/tiny-transformer-en-de" and cached.refs["main"].commit_hash == commit
    assert {file.file_name for file in cached.refs["main"].files} == {p.name for p in directory.iterdir()}
    (tmp_path / "elsewhere").mkdir()  # no directory of that name can be found relative to the working directory
    remote = run_without_package("vaswani-org/tiny-transformer-en-de", tmp_path / "elsewhere", hf_home)
    assert remote == {"pipeline": translator(SENTENCES, batch_size=2), "single": translator(SENTENCES[0])}


def test_n_best_with_scores_is_beam_search_ranking(trained):
    """`num_return_sequences=3, return_scores=True`: per input, 3 dicts best first, in input order, whose texts are
    generate()'s hypotheses and whose scores are transformers' own beam `sequences_scores` (within 1e-4, fp32)."""
    model, tokenizer, sentences = trained
    texts = [sentences[0], "", *sentences[1:6]]
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer)
    decoding = dict(num_beams=4, length_penalty=0.6, early_stopping=True, max_new_tokens=30)
    results = pipe(texts, num_return_sequences=3, return_scores=True, max_tokens=64, **decoding)
    batch = tokenizer(sentences[:6], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **batch, num_return_sequences=3, output_scores=True, return_dict_in_generate=True, **decoding
        )
    expected_texts = tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
    assert results[1] == [{"translation_text": "", "score": 0.0}] * 3
    found = [records for index, records in enumerate(results) if index != 1]
    for sentence, records in enumerate(found):
        assert [record["translation_text"] for record in records] == expected_texts[3 * sentence : 3 * sentence + 3]
        scores = torch.tensor([record["score"] for record in records])
        torch.testing.assert_close(scores, out.sequences_scores[3 * sentence : 3 * sentence + 3], rtol=0, atol=1e-4)
        assert scores[0] >= scores[1] >= scores[2]
    single = pipe(sentences[0], return_scores=True, **decoding)
    assert single[0]["translation_text"] == found[0][0]["translation_text"]  # a string: its best, scored alike
    assert single[0]["score"] == pytest.approx(found[0][0]["score"], abs=1e-5)


def test_score_pairs_is_the_log_softmax_of_the_labels(trained):
    """`TranslationPipeline.score`: per token the log-softmax of the model's logits at each target token, per pair
    their sum / length ** alpha; in input order although batched by length."""
    model, tokenizer, sentences = trained
    sources, targets = sentences[:7], [sentence.upper() for sentence in sentences[7:14]]
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer)
    results = pipe.score(sources, targets, max_tokens=40, length_penalty=0.6)
    for source, target, result in zip(sources, targets, results, strict=True):
        labels = tokenizer(text_target=[target], return_tensors="pt")["input_ids"]  # (1, tgt_len)
        with torch.no_grad():
            logits = model(**tokenizer([source], return_tensors="pt"), labels=labels).logits
        expected = logits.log_softmax(-1).gather(-1, labels[..., None])[0, :, 0]
        torch.testing.assert_close(torch.tensor(result["token_log_probs"]), expected, rtol=0, atol=1e-5)
        assert result["tokens"] == tokenizer.convert_ids_to_tokens(labels[0])
        assert result["score"] == pytest.approx(float(expected.sum()) / len(expected) ** 0.6, abs=1e-5)
    with pytest.raises(ValueError, match="one target per source"):
        pipe.score(sources, targets[:2])
