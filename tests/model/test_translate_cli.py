"""`vaswani-translate` (vaswani_transformer/translate_cli.py) on conftest's `trained` model, saved with the paper's
decoding, run in this process as the console script runs (`translate(argv)`, stdin/stdout as byte pipes).

References: `generate()` on the same batches; transformers' own beam search for n-best texts and scores; the
CTranslate2 export (an independent implementation) for every mode; `EnsembleModel` for ensembles.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_multi30k
from transformers import GenerationConfig

from vaswani_transformer.ensemble import EnsembleModel
from vaswani_transformer.translate_cli import translate


PAPER_DECODING = dict(num_beams=4, length_penalty=0.6, early_stopping=True, max_new_tokens=30)


def save(model, tokenizer, directory: Path) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    GenerationConfig(**{**model.generation_config.to_diff_dict(), **PAPER_DECODING}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory) -> Path:
    model, tokenizer, _ = trained
    return save(model, tokenizer, tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def exported(saved, tmp_path_factory) -> Path:
    pytest.importorskip("ctranslate2")
    from vaswani_transformer.export import export_ctranslate2

    return export_ctranslate2(saved, tmp_path_factory.mktemp("ct2") / "model")


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`translate(args)` with stdin/stdout/stderr as UTF-8 byte pipes; returns status, stdout, stderr."""
    streams = {
        name: io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True) for name in ("stdout", "stderr")
    }
    streams["stdin"] = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    saved_streams = {name: getattr(sys, name) for name in streams}
    try:
        for name, stream in streams.items():
            setattr(sys, name, stream)
        status = translate(list(args))
    finally:
        for name, stream in saved_streams.items():
            setattr(sys, name, stream)
    out, err = (streams[name].buffer.getvalue().decode("utf-8") for name in ("stdout", "stderr"))
    return subprocess.CompletedProcess(args, status, out, err)


def lines_of(sentences: list[str]) -> bytes:
    return "".join(sentence + "\n" for sentence in sentences).encode("utf-8")


def test_translates_in_input_order_as_generate(trained, saved, tmp_path):
    """Files in, file out: one line per input line (blank lines kept), equal to one padded `generate` batch."""
    model, tokenizer, sentences = trained
    sources = [*sentences[:6], "", *sentences[6:12]]
    (tmp_path / "in.en").write_bytes(lines_of(sources))
    output = tmp_path / "out.de"
    args = ["--model_name_or_path", str(saved), "--input_file", str(tmp_path / "in.en"), "--output_file", str(output)]
    result = run_cli(*args, "--max_tokens", "60")  # several length-sorted batches
    assert result.returncode == 0, result.stderr
    batch = tokenizer(sentences[:12], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = tokenizer.batch_decode(model.generate(**batch, **PAPER_DECODING), skip_special_tokens=True)
    assert output.read_text(encoding="utf-8").split("\n") == [*expected[:6], "", *expected[6:], ""]
    refused = run_cli(*args)
    assert refused.returncode == 2 and "pass --overwrite_output_file" in refused.stderr
    assert run_cli(*args, "--overwrite_output_file").returncode == 0


def test_n_best_is_transformers_beam_search_with_its_scores(trained, saved):
    model, tokenizer, sentences = trained
    result = run_cli("--model", str(saved), "--num_return_sequences", "3", stdin=lines_of(sentences[:8]))
    assert result.returncode == 0, result.stderr
    batch = tokenizer(sentences[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **batch, **PAPER_DECODING, num_return_sequences=3, output_scores=True, return_dict_in_generate=True
        )
    texts = tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
    fields = [line.split(" ||| ") for line in result.stdout.splitlines()]
    assert [(int(i), text) for i, text, _ in fields] == [(row // 3, text) for row, text in enumerate(texts)]
    torch.testing.assert_close(torch.tensor([float(s) for *_, s in fields]), out.sequences_scores, rtol=0, atol=1e-4)


@pytest.mark.parametrize("mode", ["translate", "n-best", "score", "target prefix"])
def test_torch_and_ctranslate2_backends_agree(trained, saved, exported, mode, tmp_path, multi30k_dir):
    """Each mode on the exported model through CTranslate2 prints what the torch backend prints (scores within
    fp32 noise: the last printed digit)."""
    _, _, sentences = trained
    references = read_multi30k(multi30k_dir, "val", "de", 12)
    sources, args = sentences[:12], []
    if mode == "n-best":
        args = ["--num_return_sequences", "2"]
    elif mode == "score":
        sources, args = [f"{s}\t{r}" for s, r in zip(sources, references, strict=True)], ["--score"]
    elif mode == "target prefix":
        (tmp_path / "prefixes").write_bytes(lines_of([" ".join(r.split()[: i % 3]) for i, r in enumerate(references)]))
        args = ["--target_prefix_file", str(tmp_path / "prefixes")]
    ours = run_cli("--model", str(saved), *args, stdin=lines_of(sources))
    theirs = run_cli("--model", str(exported), "--backend", "ctranslate2", *args, stdin=lines_of(sources))
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    ours_lines, theirs_lines = ours.stdout.splitlines(), theirs.stdout.splitlines()
    assert len(ours_lines) == len(theirs_lines) == len(sources) * (2 if mode == "n-best" else 1)
    for mine, other in zip(ours_lines, theirs_lines, strict=True):
        if mode in ("n-best", "score"):
            *text, score = mine.split(" ||| ")
            *other_text, other_score = other.split(" ||| ")
            assert text == other_text and float(score) == pytest.approx(float(other_score), abs=1e-4)
        else:
            assert mine == other


def test_ensembles(trained, saved, tmp_path):
    """A model twice prints what it prints alone; two models print `EnsembleModel`'s translations."""
    model, tokenizer, sentences = trained
    torch.manual_seed(1)
    other = type(model)(model.config)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(0.1 * parameter.std() * torch.randn_like(parameter))
    second = save(other.eval(), tokenizer, tmp_path / "other")
    stdin = lines_of(sentences[:8])
    alone = run_cli("--model", str(saved), stdin=stdin)
    twice = run_cli("--model_name_or_path", str(saved), "--model_name_or_path", str(saved), stdin=stdin)
    assert twice.returncode == 0 and twice.stdout == alone.stdout
    both = run_cli("--model_name_or_path", str(saved), str(second), stdin=stdin)
    batch = tokenizer(sentences[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = EnsembleModel([model, other.eval()]).generate(**batch, **PAPER_DECODING)
    assert both.stdout.splitlines() == tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert both.stdout != alone.stdout


def test_bad_lines_and_user_errors(trained, saved, tmp_path):
    _, _, sentences = trained
    stdin = lines_of(sentences[:2]) + b"Un caf\xe9 au lait.\n" + lines_of(sentences[2:3])
    result = run_cli("--model", str(saved), stdin=stdin)
    assert result.returncode == 1
    assert (
        "vaswani-translate: stdin: line 3: not valid UTF-8 (invalid continuation byte: byte 7 is e9)" in result.stderr
    )
    assert len(result.stdout.splitlines()) == 4 and result.stdout.splitlines()[2] == ""
    missing = run_cli("--model", str(tmp_path / "nowhere"), "--input_file", str(tmp_path / "none.en"))
    assert missing.returncode == 2 and missing.stderr.startswith("vaswani-translate: error: --input_file")
    no_tab = run_cli("--model", str(saved), "--score", stdin=lines_of(sentences[:1]))
    assert no_tab.returncode == 2 and "stdin: line 1: --score needs 'source<TAB>target'" in no_tab.stderr
    (tmp_path / "prefixes").write_text("Ein\n")
    short = run_cli("--model", str(saved), "--target_prefix_file", str(tmp_path / "prefixes"), stdin=stdin)
    assert short.returncode == 2 and "has 1 lines" in short.stderr
    assert run_cli("--model", str(saved), stdin=b"").stdout == ""  # no input, no output
    last = run_cli("--model", str(saved), stdin=b"\n" + sentences[0].encode())  # a last line without a newline
    assert len(last.stdout.splitlines()) == 2 and last.stdout.splitlines()[0] == ""
    long_line = " ".join(sentences) * 4
    warned = run_cli("--model", str(saved), "--max_source_length", "8", stdin=lines_of(["A dog.", long_line] * 2))
    assert warned.returncode == 0 and warned.stderr.count("source longer than") == 1
    assert "vaswani-translate: warning: stdin: line 2: source longer than 8 tokens, truncated" in warned.stderr
