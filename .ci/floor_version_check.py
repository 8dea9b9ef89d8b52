"""Floor job: a model saved by this package translates the same on the oldest supported transformers.

    python .ci/floor_version_check.py save DIR      # main venv: DIR/model and DIR/expected.json
    python .ci/floor_version_check.py check DIR     # floor venv, without this package: compare with expected.json
    python .ci/floor_version_check.py floor-version # the release to install in the floor venv, e.g. 5.4.0

`save` trains a byte-level BPE tokenizer on the sentences below, trains a tiny model to translate them for a few
seconds (so that its outputs depend on every source token and on the padding), saves both with the pipeline, and
records what the saved directory gives: the ids of greedy and beam-4 `generate()` on one padded batch, the translation
pipeline's texts (a padded batch with blank inputs, and one call with its own generation parameters), and the shapes
of the attention weights after `set_attn_implementation("eager")`. `check` loads the same directory as remote code in
a Python where `vaswani_transformer` cannot be imported, computes the same outputs and compares them exactly;
sampling only has to run (one output row per sentence), since transformers releases may draw from the random
generator in a different order. It prints one PASSED or FAILED line and exits 1 on a mismatch. The floor release is
`MIN_TRANSFORMERS_VERSION` of the model's configuration file, which `tests/model/test_floor_version.py` keeps equal
to the lower bound in pyproject.toml; that test also runs this script under the current release.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline


# English-German pairs: the tokenizer's corpus and the tiny model's training data.
PAIRS = [
    ("A man is riding a bicycle.", "Ein Mann fährt Fahrrad."),
    ("Two dogs play in the snow.", "Zwei Hunde spielen im Schnee."),
    ("A girl is reading a book.", "Ein Mädchen liest ein Buch."),
    ("The children are playing outside.", "Die Kinder spielen draußen."),
    ("A woman is walking her dog in the park.", "Eine Frau geht mit ihrem Hund im Park spazieren."),
    ("Two men are talking.", "Zwei Männer unterhalten sich."),
]
SOURCES = [source for source, _ in PAIRS] + ["A dog is reading in the park."]
# Tiny model sizes (d_model, layers, heads, d_ff) and training budget: seconds on 2 CPU cores.
TINY_MODEL = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    dropout=0.0,
    label_smoothing=0.0,
    max_position_embeddings=64,
)
TRAINING_STEPS = 150
MAX_NEW_TOKENS = 32


def train_and_save(model_dir: Path) -> None:
    """Train the tokenizer and the tiny model on `PAIRS` (deterministic) and save both with the pipeline."""
    from vaswani_transformer import VaswaniTransformerConfig, VaswaniTransformerForConditionalGeneration
    from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast

    texts = [text for pair in PAIRS for text in pair]
    tokenizer = VaswaniTransformerTokenizerFast.train_from_iterator(texts, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    config = VaswaniTransformerConfig(vocab_size=len(tokenizer), **TINY_MODEL)
    model = VaswaniTransformerForConditionalGeneration(config)
    batch = tokenizer(
        [source for source, _ in PAIRS], text_target=[target for _, target in PAIRS], padding=True, return_tensors="pt"
    )
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100  # (pairs, tgt_len): no loss on padding
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(TRAINING_STEPS):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    model.generation_config.num_beams = 4
    model.generation_config.length_penalty = 0.6  # §6.1
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    model.save_pretrained(model_dir)  # also records and copies the translation pipeline
    tokenizer.save_pretrained(model_dir)


def outputs(model_dir: Path) -> dict[str, Any]:
    """What the saved directory gives when loaded with the installed transformers (JSON values).

    The classes come from the saved files (remote code) where the package cannot be imported (`check`); in `save`,
    the package's registered classes, the same source, load the model.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    translator = pipeline("translation", model=str(model_dir), trust_remote_code=True)
    batch = tokenizer(SOURCES, padding=True, return_tensors="pt")  # (sentences, src_len), right-padded
    with torch.no_grad():
        greedy = model.generate(**batch, num_beams=1)  # (sentences, out_len)
        beam = model.generate(**batch, num_beams=4)  # (sentences, out_len)
        torch.manual_seed(0)
        sampled = model.generate(**batch, num_beams=1, do_sample=True, top_k=10)  # (sentences, out_len)
        model.set_attn_implementation("eager")  # the attention weights are returned by "eager" only
        attentions = model(**batch, decoder_input_ids=greedy[:, :3], output_attentions=True)
    return {
        "greedy": greedy.tolist(),
        "beam4": beam.tolist(),
        "sampled_rows": len(sampled),
        "attention_shapes": {
            name: [list(weights.shape) for weights in getattr(attentions, name)]
            for name in ("encoder_attentions", "decoder_attentions", "cross_attentions")
        },
        "pipeline": translator(SOURCES[:3] + ["", "  "] + SOURCES[3:], batch_size=3),
        "pipeline_greedy": translator(SOURCES[-1], num_beams=1, max_new_tokens=5),
    }


def mismatches(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The names of the outputs that differ (sorted), each with both values: empty when all agree.

    Args:
        expected, actual: two results of `outputs` (with the same keys, or the missing ones count as different).
    """
    return [
        f"{name}: expected {expected.get(name)!r}, got {actual.get(name)!r}"
        for name in sorted(expected.keys() | actual.keys())
        if expected.get(name) != actual.get(name)
    ]


def block_package_import() -> None:
    """Make `import vaswani_transformer` fail, so that every class must come from the saved directory.

    Raises:
        RuntimeError: if the package can still be imported.
    """
    sys.modules["vaswani_transformer"] = None
    try:
        import vaswani_transformer  # noqa: F401
    except ImportError:
        return
    raise RuntimeError("vaswani_transformer is importable: the check would prove nothing")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand (see the module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["save", "check", "floor-version"])
    parser.add_argument("directory", type=Path, nargs="?", help="holds model/ and expected.json")
    args = parser.parse_args(argv)
    if args.command == "floor-version":
        from vaswani_transformer.configuration_vaswani_transformer import MIN_TRANSFORMERS_VERSION

        print(".".join(map(str, MIN_TRANSFORMERS_VERSION + (0,))))
        return 0
    if args.directory is None:
        parser.error(f"{args.command} needs a directory")
    transformers.logging.set_verbosity_error()  # the PASSED or FAILED line, not the loading and length warnings
    transformers.logging.disable_progress_bar()
    model_dir = args.directory / "model"
    if args.command == "save":
        train_and_save(model_dir)
        expected = {"transformers": transformers.__version__, "outputs": outputs(model_dir)}
        (args.directory / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
        print(f"floor check: saved {model_dir} and the outputs of transformers {transformers.__version__}")
        return 0
    block_package_import()
    expected = json.loads((args.directory / "expected.json").read_text())
    versions = f"transformers {transformers.__version__} vs {expected['transformers']}"
    try:
        actual = outputs(model_dir)
    except Exception as error:
        print(f"floor check FAILED: {versions}: {type(error).__name__}: {error}")
        raise
    different = mismatches(expected["outputs"], actual)
    if different:
        print(f"floor check FAILED: {versions}: " + "; ".join(different))
        return 1
    texts = [record["translation_text"] for record in actual["pipeline"]]
    same = "same greedy, beam-4, pipeline and attention outputs"
    print(f"floor check PASSED: {versions}: {same} for {len(SOURCES)} sentences")
    print(f"  pipeline: {texts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
