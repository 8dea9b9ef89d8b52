"""`vaswani_transformer.export`: the CTranslate2 model computes what ours does and translates as the pipeline does.

The reference is our own model: `generate()` token ids (greedy and beam search) and the log-softmax of its logits, on
conftest's `trained` tiny model (300 steps on real Multi30k pairs, so that sentences end at different lengths) and
real validation sentences. CTranslate2 runs its own C++ search; equal ids show that the weights, the positional table,
the norms and the search options were all carried over.
"""

from __future__ import annotations

import logging
import os
import stat

import pytest
import torch
from conftest import save_tiny_translation_model, torch_threads
from transformers import GenerationConfig

from vaswani_transformer import TranslationPipeline
from vaswani_transformer.command_line import run
from vaswani_transformer.export import EXPORT_INFO_FILE, Translator, export_ctranslate2, translate_batch_options
from vaswani_transformer.export.cli import main


ctranslate2 = pytest.importorskip("ctranslate2")

# The paper's decoding (§6.1): beam 4, length penalty 0.6; outputs of at most 30 tokens for this tiny model.
PAPER_DECODING = dict(num_beams=4, length_penalty=0.6, early_stopping=True, max_new_tokens=30)


def save(model, tokenizer, directory, **generation) -> None:
    """Save `model` and `tokenizer` to `directory` with a generation config of `generation` (the model's own
    `generation_config` is left as it is: the fixture is shared)."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    GenerationConfig(**{**model.generation_config.to_diff_dict(), **generation}).save_pretrained(directory)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Translator:
    """conftest's trained tiny model, saved with the paper's decoding settings and exported in float32."""
    model, tokenizer, _ = trained
    model_dir = tmp_path_factory.mktemp("trained")
    save(model, tokenizer, model_dir, **PAPER_DECODING)
    return Translator(export_ctranslate2(model_dir, tmp_path_factory.mktemp("ct2") / "model"))


def generated(model, tokenizer, sentences: list[str], **kwargs) -> list[list[int]]:
    """`model.generate()` ids of each sentence after the decoder start token, up to and including the first `</s>`."""
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        rows = model.generate(**batch, **kwargs).tolist()  # (batch, 1 + out_len)
    eos = tokenizer.eos_token_id
    return [row[1 : row.index(eos, 1) + 1] if eos in row[1:] else row[1:] for row in rows]


SEARCHES = {
    "greedy": dict(num_beams=1, max_new_tokens=30),
    "paper: beam 4, alpha 0.6": PAPER_DECODING,
    "beam 5, alpha 1": dict(num_beams=5, length_penalty=1.0, early_stopping=True, max_new_tokens=30),
    "beam 4, max_new_tokens cuts": dict(PAPER_DECODING, max_new_tokens=5),
}


@pytest.mark.parametrize("search", SEARCHES)
def test_token_ids_equal_generate(trained, exported, search):
    model, tokenizer, sentences = trained
    kwargs = SEARCHES[search]
    ours = generated(model, tokenizer, sentences, **kwargs)
    options = {"num_beams": kwargs["num_beams"], "max_new_tokens": kwargs["max_new_tokens"]}
    if "length_penalty" in kwargs:
        options["length_penalty"] = kwargs["length_penalty"]
    theirs = exported.generate(tokenizer(sentences)["input_ids"], **options)
    assert theirs == ours
    if kwargs["max_new_tokens"] == 30:
        ended = sum(ids[-1] == tokenizer.eos_token_id for ids in ours)
        assert len({len(ids) for ids in ours}) > 3 and ended > len(ours) // 2, "too alike: is the model trained?"


def test_exported_settings_are_the_generation_config(exported):
    """The defaults of `Translator` are the model's generation config: beam 4 and alpha 0.6 without arguments."""
    assert exported.options["beam_size"] == 4 and exported.options["length_penalty"] == 0.6
    assert exported.options["max_decoding_length"] == 30
    assert translate_batch_options(GenerationConfig())["beam_size"] == 1  # transformers' default: greedy


def test_score_equals_log_softmax(trained, exported):
    """CTranslate2's `score_batch` log-probs equal the log-softmax of our logits at each label, within fp32 noise."""
    model, tokenizer, sentences = trained
    references = [sentence[::-1] for sentence in sentences[:8]]  # any target will do: scoring is teacher forcing
    batch = tokenizer(sentences[:8], text_target=references)
    scores = exported.score(batch["input_ids"], batch["labels"])
    for source, labels, theirs in zip(batch["input_ids"], batch["labels"], scores, strict=True):
        labels = torch.tensor([labels])  # (1, tgt_len)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([source]), labels=labels).logits  # (1, tgt_len, vocab)
        ours = logits.log_softmax(-1).gather(-1, labels[..., None])[0, :, 0]  # (tgt_len,)
        torch.testing.assert_close(torch.tensor(theirs), ours, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="must end with </s>"):
        exported.score(batch["input_ids"][:1], [batch["labels"][0][:-1]])


def test_translate_equals_the_pipeline(trained, exported, caplog):
    """Same texts as the translation pipeline, blank inputs included, and the same truncation warning."""
    model, tokenizer, sentences = trained
    texts = sentences[:12] + ["", "   "]
    pipe = TranslationPipeline(model=model, tokenizer=tokenizer, **PAPER_DECODING)
    expected = [record["translation_text"] for record in pipe(texts)]
    assert exported.translate(texts) == expected
    assert exported.translate(texts[0]) == expected[0]

    caplog.set_level(logging.WARNING)
    long_text = " ".join(sentences[:3])
    expected = pipe(long_text, max_source_length=8)[0]["translation_text"]
    pipeline_warnings = [record.getMessage() for record in caplog.records]
    caplog.clear()
    assert exported.translate(long_text, max_source_length=8) == expected
    assert [record.getMessage() for record in caplog.records] == pipeline_warnings
    assert "truncated to 8 tokens" in pipeline_warnings[0]


def test_loading_leaves_torch_threads_alone(exported):
    """CTranslate2 sets the OpenMP thread count of the thread that loads a model, which is also PyTorch's: with two
    torch threads (not the suite's one, which a loader setting one thread by mistake would leave unchanged)."""
    with torch_threads(2):
        translator = Translator(exported.model_dir, intra_threads=1)
        assert torch.get_num_threads() == 2
    assert translator.translate("A dog.") == exported.translate("A dog.")


def test_position_table_limit_is_a_clear_error(trained, tmp_path):
    """Positions past the exported table are refused before CTranslate2 sees them, naming the option to fix it."""
    model, tokenizer, sentences = trained
    save(model, tokenizer, tmp_path / "model", **PAPER_DECODING)
    translator = Translator(export_ctranslate2(tmp_path / "model", tmp_path / "ct2", max_positions=32))
    assert translator.max_positions == 32
    long_text = " ".join(sentences[:4])  # more than 32 tokens
    assert len(tokenizer(long_text)["input_ids"]) > 32
    with pytest.raises(ValueError, match=r"A source of \d+ tokens .*\(32 positions\).*--max_positions"):
        translator.translate(long_text, truncation=False)
    assert translator.translate(long_text, max_source_length=32)  # truncated to the table: fine
    with pytest.raises(ValueError, match=r"an output of 40 tokens .*\(32 positions\)"):
        translator.translate(sentences[0], max_new_tokens=40)
    with pytest.raises(RuntimeError, match="position"):  # what CTranslate2 itself says, without our check
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(long_text)["input_ids"])
        translator.translator.translate_batch([tokens], max_input_length=0)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(layer_norm_position="pre"),
        dict(tie_word_embeddings=False),
        dict(positional_encoding_layout="concatenated", scale_embedding=False),
        dict(activation_function="gelu", layer_norm_eps=1e-6),
    ],
    ids=["pre-norm", "untied embeddings", "concatenated sinusoids, unscaled", "gelu, eps 1e-6"],
)
def test_architecture_options_export(small_tokenizer, real_sentences, tmp_path, overrides):
    """Every option of the config that CTranslate2 can express: log-probs and greedy ids equal ours."""
    model = save_tiny_translation_model(tmp_path / "model", small_tokenizer, seed=1, **overrides)
    translator = Translator(export_ctranslate2(tmp_path / "model", tmp_path / "ct2"))
    batch = small_tokenizer(real_sentences["en"], text_target=real_sentences["de"])
    for source, labels, theirs in zip(
        batch["input_ids"], batch["labels"], translator.score(batch["input_ids"], batch["labels"]), strict=True
    ):
        labels = torch.tensor([labels])
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([source]), labels=labels).logits
        ours = logits.log_softmax(-1).gather(-1, labels[..., None])[0, :, 0]
        torch.testing.assert_close(torch.tensor(theirs), ours, rtol=1e-5, atol=1e-4)
    ours = generated(model, small_tokenizer, real_sentences["en"], num_beams=1, max_new_tokens=6)
    assert translator.generate(batch["input_ids"], num_beams=1, max_new_tokens=6) == ours


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(activation_function="mish"), "activation_function='mish'"),
        (dict(eos_token_id=[2, 3]), r"eos_token_id=\[2, 3\]"),
    ],
)
def test_what_cannot_be_exported_is_named(small_tokenizer, tmp_path, overrides, message):
    save_tiny_translation_model(tmp_path / "model", small_tokenizer, **overrides)
    with pytest.raises(ValueError, match=message):
        export_ctranslate2(tmp_path / "model", tmp_path / "ct2")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"], "a failed export left files behind"


def test_int8_export_is_smaller_and_translates(trained, exported, tmp_path):
    model, tokenizer, sentences = trained
    save(model, tokenizer, tmp_path / "model", **PAPER_DECODING)
    sizes = {}
    for quantization in ("none", "int8"):  # a short positional table (float32 in both), so weights dominate
        export_ctranslate2(tmp_path / "model", tmp_path / quantization, quantization, max_positions=64)
        sizes[quantization] = (tmp_path / quantization / "model.bin").stat().st_size
    assert sizes["int8"] < 0.4 * sizes["none"]
    int8 = Translator(tmp_path / "int8")
    assert int8.info["quantization"] == "int8"
    same = sum(a == b for a, b in zip(int8.translate(sentences), exported.translate(sentences), strict=True))
    assert same >= len(sentences) // 2, f"int8 agrees with float32 on only {same}/{len(sentences)} sentences"


def test_cli_refuses_to_overwrite_and_writes_nothing_half_done(small_tokenizer, tmp_path, capsys):
    save_tiny_translation_model(tmp_path / "model", small_tokenizer)
    out = tmp_path / "ct2"
    assert run(main, [str(tmp_path / "model"), str(out), "--quantization", "int8"], prog="vaswani-export-ct2") == 0
    first = (out / "model.bin").read_bytes()
    status = run(main, [str(tmp_path / "model"), str(out)], prog="vaswani-export-ct2")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and error.startswith("vaswani-export-ct2: error:") and "--overwrite_output_dir" in error
    assert (out / "model.bin").read_bytes() == first
    args = [str(tmp_path / "model"), str(out), "--overwrite_output_dir"]
    assert run(main, args, prog="vaswani-export-ct2") == 0
    assert (out / "model.bin").read_bytes() != first  # float32 now
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ct2", "model"]
    assert run(main, [str(tmp_path / "missing"), str(tmp_path / "other")], prog="vaswani-export-ct2") == 2
    assert not (tmp_path / "other").exists()
    with pytest.raises(FileNotFoundError, match=EXPORT_INFO_FILE):
        Translator(tmp_path / "model")


def test_cli_folders_by_position_or_flag(small_tokenizer, tmp_path, capsys):
    """MODEL_DIR and OUTPUT_DIR by position, around the flags, or as --model_dir / --output_dir; missing or given
    twice, argparse's one-line error and exit status 2, before anything is written."""
    model_dir = tmp_path / "model"
    save_tiny_translation_model(model_dir, small_tokenizer)
    assert main(["--max_positions", "16", str(model_dir), str(tmp_path / "a")]) == 0
    assert main([str(model_dir), "--max_positions", "16", str(tmp_path / "b")]) == 0
    assert main(["--model_dir", str(model_dir), "--output_dir", str(tmp_path / "c"), "--max_positions", "16"]) == 0
    assert all((tmp_path / name / EXPORT_INFO_FILE).is_file() for name in "abc")
    capsys.readouterr()
    for argv, message in (
        ([str(model_dir)], "the following arguments are required: OUTPUT_DIR"),
        ([str(model_dir), str(tmp_path / "d"), "--model_dir", str(model_dir)], "MODEL_DIR is given twice"),
        ([str(model_dir), str(tmp_path / "d"), "--quantization", "int9"], "invalid choice: 'int9'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.splitlines()[-1]
        assert error.startswith("vaswani-export-ct2: error: ") and message in error
    assert not (tmp_path / "d").exists()


def test_never_writes_over_the_model_or_a_file(small_tokenizer, tmp_path, monkeypatch):
    """The model directory, a folder holding it and a file are refused, even with overwrite_output_dir."""
    model_dir = tmp_path / "runs" / "model"
    save_tiny_translation_model(model_dir, small_tokenizer)
    before = sorted(path.name for path in model_dir.iterdir())
    for output_dir in (model_dir, tmp_path / "runs", tmp_path):
        with pytest.raises(FileExistsError, match="is or holds the --model directory"):
            export_ctranslate2(model_dir, output_dir, overwrite_output_dir=True)
    monkeypatch.chdir(model_dir)
    with pytest.raises(FileExistsError, match="is or holds the --model directory"):
        export_ctranslate2(model_dir, ".", overwrite_output_dir=True)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="is a file"):
        export_ctranslate2(model_dir, tmp_path / "file", overwrite_output_dir=True)
    assert sorted(path.name for path in model_dir.iterdir()) == before
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file", "runs"]


def test_export_has_the_users_permissions(small_tokenizer, tmp_path):
    """The export is built in a folder of its own, then renamed: it must not keep a private temporary folder's mode."""
    save_tiny_translation_model(tmp_path / "model", small_tokenizer)
    previous = os.umask(0o022)
    try:
        out = export_ctranslate2(tmp_path / "model", tmp_path / "ct2", max_positions=16)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_generation_config_is_what_translates(trained, tmp_path, caplog):
    """Without arguments, the export decodes as `generate()` does with the saved generation config alone: here
    beam 3, alpha 1.2 and max_length (not max_new_tokens), whose off-by-one the export must get right; min_length
    is exported too and holds; and settings it cannot carry are named in a warning."""
    model, tokenizer, sentences = trained
    search = dict(num_beams=3, length_penalty=1.2, early_stopping=True)
    # Limits that both bite on this model: its translations' lengths depend on the machine's rounding over the 300
    # training steps of the fixture, so they are read from its own unlimited search. generate()'s lengths count the
    # decoder start token: max_length cuts the longer half, min_length lengthens the shortest.
    free = sorted(len(ids) for ids in generated(model, tokenizer, sentences, **search, max_new_tokens=40))
    max_length, min_length = free[len(free) // 2] + 1, free[0] + 2
    assert min_length < max_length, f"translations of too similar lengths for the test: {free}"
    save(model, tokenizer, tmp_path / "model", **search, max_length=max_length)
    translator = Translator(export_ctranslate2(tmp_path / "model", tmp_path / "ct2"))
    ours = generated(model, tokenizer, sentences, **search, max_length=max_length)
    theirs = translator.generate(tokenizer(sentences)["input_ids"])
    lengths = [len(ids) for ids in ours]
    assert max(lengths) == max_length - 1 and 0 < lengths.count(max_length - 1) < len(lengths)  # bites, not on all
    # Every translation that ends with </s> is generate()'s. Where max_length cuts every hypothesis of a sentence,
    # CTranslate2 may keep another cut hypothesis than transformers' beam search (a known difference, README
    # "Deploy"): there only the length is the same.
    for mine, exported in zip(ours, theirs, strict=True):
        assert exported == mine if mine[-1] == tokenizer.eos_token_id else len(exported) == len(mine) == max_length - 1
    # min_length is exported as CTranslate2's min_decoding_length and holds. Its beams are not compared token for
    # token: with a minimum length that bites, CTranslate2's search can keep other partial hypotheses than
    # transformers' (seen on 1 of these 48 sentences on one machine; README "Deploy").
    save(model, tokenizer, tmp_path / "model_min", **search, max_length=max_length, min_length=min_length)
    translator = Translator(export_ctranslate2(tmp_path / "model_min", tmp_path / "ct2_min"))
    lengths = [len(ids) for ids in translator.generate(tokenizer(sentences)["input_ids"])]
    assert min(lengths) >= min_length - 1 and max(lengths) <= max_length - 1 and min(lengths) > free[0]

    caplog.set_level(logging.WARNING)
    options = translate_batch_options(GenerationConfig(forced_eos_token_id=2, num_return_sequences=2, num_beams=2))
    assert options["beam_size"] == 2
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "forced_eos_token_id=2 is not exported" in warned and "num_return_sequences=2 is not exported" in warned
    options = translate_batch_options(GenerationConfig(min_new_tokens=2, min_length=5))  # generate() enforces both
    assert options["min_decoding_length"] == 4


def test_translate_rejects_what_is_not_text(exported):
    with pytest.raises(ValueError, match=r"texts\[1\] is a int"):
        exported.translate(["A dog.", 3])


def test_gnmt_length_penalty_is_refused_not_silently_changed():
    """CTranslate2 divides by |Y|^alpha only: a model decoding with GNMT's penalty must not export as if it did."""
    config = GenerationConfig(num_beams=4, length_penalty=0.6, length_penalty_type="gnmt")
    with pytest.raises(ValueError, match="length_penalty_type='gnmt'.*CTranslate2"):
        translate_batch_options(config)
    config.length_penalty_type = "length"
    assert translate_batch_options(config)["length_penalty"] == 0.6
