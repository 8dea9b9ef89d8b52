"""The scripts in examples/ run on a tiny saved model, as a user runs them.

translate.py (now `vaswani-translate`, tested in tests/model/test_translate_cli.py) runs once as a user runs it, a
subprocess reading stdin and writing stdout through pipes; the other runs call each script's `main(argv)` in this
process (`run_example`: the same stdin bytes in, stdout and stderr out, the exit status), which spares each test an
interpreter's seconds of imports.

translate.py turns stdin into exactly one output line per input line, equal to `generate` on the same batches;
pipeline_quickstart.py prints the pipeline's output; visualize_attention.py writes three PNG grids whose heatmap
tiles (found in the image itself) match the model's layers and heads.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, fresh_process, save_tiny_translation_model

from vaswani_transformer.batching_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from vaswani_transformer.pipeline_translation import TranslationPipeline


EXAMPLES = REPO_ROOT / "examples"
# Distinct shapes per stack, so that a grid drawn from the wrong attention would have the wrong tiles.
ENCODER_LAYERS, ENCODER_HEADS, DECODER_LAYERS, DECODER_HEADS = 2, 4, 3, 2


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_tokenizer):
    directory = tmp_path_factory.mktemp("tiny_example_model")
    model = save_tiny_translation_model(
        directory,
        small_tokenizer,
        encoder_layers=ENCODER_LAYERS,
        encoder_attention_heads=ENCODER_HEADS,
        decoder_layers=DECODER_LAYERS,
        decoder_attention_heads=DECODER_HEADS,
    )
    return directory, model, small_tokenizer


def run_example_subprocess(
    script: str, *args: str, stdin: str | bytes | None = None, cwd: Path
) -> subprocess.CompletedProcess:
    """Run examples/<script> offline from `cwd` (outside the checkout), without PYTHONPATH, in a new interpreter.

    `stdin` text is sent as UTF-8, bytes as they are; stdout and stderr come back decoded from UTF-8.
    """
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_HOME=str(cwd / "hf_home"))
    env.setdefault("OMP_NUM_THREADS", "1")  # a tiny model: threads only contend on a busy machine
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        input=stdin.encode("utf-8") if isinstance(stdin, str) else stdin,
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=300,
    )
    result.stdout, result.stderr = result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    return result


def run_example(script: str, *args: str, stdin: str | bytes | None = None, cwd: Path) -> subprocess.CompletedProcess:
    """examples/<script>'s `main(args)` in this process from `cwd`, as `run_example_subprocess` runs the script.

    stdin, stdout and stderr are byte streams wrapped as UTF-8 text (as Python gives a script whose streams are
    pipes): `stdin` text goes in as UTF-8, bytes as they are. The exit status is `main`'s return value (None: 0) or
    that of a `SystemExit` (argparse's errors). One torch thread, as in the subprocess (conftest.fresh_process).
    """
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin or b""
    streams = {
        "stdin": io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"),
        "stdout": io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True),
        "stderr": io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True),
    }
    module = load_example(script)
    saved, saved_cwd = {name: getattr(sys, name) for name in streams}, os.getcwd()
    with fresh_process():
        try:
            os.chdir(cwd)
            for name, stream in streams.items():
                setattr(sys, name, stream)
            status = module.main(list(args))
        except SystemExit as exit_:
            status = exit_.code
        finally:
            for name, stream in saved.items():
                setattr(sys, name, stream)
            os.chdir(saved_cwd)
    out, err = (streams[name].buffer.getvalue().decode("utf-8") for name in ("stdout", "stderr"))
    return subprocess.CompletedProcess([script, *args], status or 0, out, err)


def sorted_batches_expected(model, tokenizer, sources: list[str], batch_size: int, buffer_size: int, **kwargs):
    """What translate.py prints: per buffer of `buffer_size` lines, the non-blank ones translated longest first in
    groups of `batch_size` (`length_sorted_batches`, sources cut at the tokenizer's limit), blank lines as ""."""
    limit = tokenizer.model_max_length
    expected = []
    for start in range(0, len(sources), buffer_size):
        chunk = sources[start : start + buffer_size]
        texts = [s for s in chunk if s.strip()]
        lengths = [min(len(ids), limit) for ids in tokenizer(texts)["input_ids"]] if texts else []
        translated = [""] * len(texts)
        for group in length_sorted_batches(lengths, DEFAULT_MAX_TOKENS, batch_size):
            batch = tokenizer(
                [texts[i] for i in group], padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )
            with torch.no_grad():
                outputs = tokenizer.batch_decode(model.generate(**batch, **kwargs), skip_special_tokens=True)
            for i, text in zip(group, one_line(outputs), strict=True):
                translated[i] = text
        found = iter(translated)
        expected += [next(found) if s.strip() else "" for s in chunk]
    return expected


def one_line(texts: list[str]) -> list[str]:
    """What translate.py prints for each translation: line breaks as spaces, stripped."""
    return [" ".join(text.splitlines()).strip() for text in texts]


def test_translate_writes_one_line_per_input_line(saved, real_sentences, tmp_path):
    directory, model, tokenizer = saved
    sources = [*real_sentences["en"][:5], "", *real_sentences["en"][5:]]  # an empty line in the middle
    result = run_example_subprocess(
        "translate.py",
        *f"--model {directory} --num_beams 2 --batch_size 3 --buffer_size 5".split(),
        stdin="".join(line + "\n" for line in sources),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(sources)  # one line per input, newline-terminated
    assert lines[:-1] == sorted_batches_expected(model, tokenizer, sources, 3, 5, num_beams=2)
    assert lines[5] == ""


def load_example(script: str):
    """Import examples/<script> as a module (in this process), registered in `sys.modules` as an import would
    (dataclasses look their module up there)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{Path(script).stem}", EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_pipeline_quickstart_prints_the_pipeline_output(saved, tmp_path):
    directory, model, tokenizer = saved
    result = run_example("pipeline_quickstart.py", "--model", str(directory), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sentences = load_example("pipeline_quickstart.py").SENTENCES
    translator = TranslationPipeline(model=model, tokenizer=tokenizer)
    batch = translator(sentences, batch_size=2, num_beams=2)
    expected = [repr(translator(sentences[0]))] + [
        f"{source} -> {output['translation_text']}" for source, output in zip(sentences, batch, strict=True)
    ]
    assert result.stdout.splitlines() == expected


def count_tiles(image: np.ndarray) -> tuple[int, int]:
    """(rows, columns) of heatmap tiles in an RGB(A) image: runs of pixel rows/columns holding colour.

    viridis pixels are strongly coloured (max - min channel > 0.2 on a 0-1 scale); the white background and the
    black/grey text are not, so each run of coloured rows (columns) is one row (column) of tiles.
    """
    rgb = image[..., :3].astype(np.float64)
    if rgb.max() > 1.0:  # 8-bit images
        rgb /= 255.0
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2  # (height, width)

    def runs(mask: np.ndarray) -> int:
        return int(mask[0]) + int(np.count_nonzero(mask[1:] & ~mask[:-1]))

    return runs(coloured.any(axis=1)), runs(coloured.any(axis=0))


def test_visualize_attention_writes_three_grids_of_every_layer_and_head(saved, tmp_path):
    import matplotlib.image

    directory, _, _ = saved
    out = tmp_path / "attention"
    result = run_example(
        "visualize_attention.py",
        *["--model", str(directory), "--sentence", "A dog runs in the park.", "--output_dir", str(out)],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {
        "encoder_self_attention.png": (ENCODER_LAYERS, ENCODER_HEADS),
        "decoder_self_attention.png": (DECODER_LAYERS, DECODER_HEADS),
        "encoder_decoder_attention.png": (DECODER_LAYERS, DECODER_HEADS),
    }
    assert result.stdout.split() == [str(out / name) for name in expected]
    for name, grid in expected.items():
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert count_tiles(image) == grid, name
