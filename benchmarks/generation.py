"""Beam-4 translation speed of a trained model against its peers, by batch size, in one run (how to run it and what
it writes: benchmarks/README.md).

Contenders, every one with the same weights and batches, beam 4, length penalty 0.6, fp32: `ours` (`generate()`,
this package's beam search), `transformers_loop` (the same model through transformers' own decoding loop,
`custom_generate=transformers_decoding_loop`; token ids must equal ours), `ours_bf16` (bf16 weights, at the default
budget only), `marian` (`convert.to_marian`), `eole` (`benchmarks.eole_peer`, its own search; where installed).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.batching_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from vaswani_transformer.convert import to_marian
from vaswani_transformer.generation_vaswani_transformer import transformers_decoding_loop
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.arguments import read_config_file
from vaswani_transformer.training.data import DEFAULT_SPLITS, read_lines
from vaswani_transformer.training.evaluation import EXTRA_OUTPUT_TOKENS

from . import CPU_PRESET
from .data import test_pairs
from .eole_peer import EOLE_VERSION, EoleTranslator, convert_to_eole, eole_available
from .report import environment, write_report
from .timing import bf16_supported, paired_speedup, time_interleaved
from .translation import (
    LENGTH_PENALTY,
    NUM_BEAMS,
    TranslationArguments,
    hf_translator,
    translation_arguments,
    translation_row,
)


__all__ = ["main", "markdown"]

# (label, batching, size): sentences per batch, or padded source tokens per batch.
SETTINGS = (
    ("batch 1", "sentences", 1),
    ("batch 64", "sentences", 64),
    ("batch 256", "sentences", 256),
    ("2048 tokens", "tokens", 2048),
    (f"{DEFAULT_MAX_TOKENS} tokens", "tokens", DEFAULT_MAX_TOKENS),
    (f"{2 * DEFAULT_MAX_TOKENS} tokens", "tokens", 2 * DEFAULT_MAX_TOKENS),
)
CONTENDERS = ("ours", "ours_bf16", "transformers_loop", "marian", "eole")
MARIAN_SETTINGS = ("batch 64", f"{DEFAULT_MAX_TOKENS} tokens")  # Marian runs transformers' loop: two rows suffice
FILE_ORDER_SETTINGS = (64, 256)
ALL = 10**9  # a token budget no batch reaches: batches limited by sentences only


@dataclasses.dataclass
class GenerationArguments(TranslationArguments):
    """`python -m benchmarks.generation` (benchmarks/README.md)."""

    device: str = dataclasses.field(default="cpu", metadata={"choices": ["cpu", "cuda"]})


def eole_translator(peer: EoleTranslator, encoded: list[list[int]], batching: str, size: int, outputs: dict):
    """A callable that translates `encoded` with eole (its own sorting and batching: `size` sentences or padded
    source tokens), storing the generated ids in `outputs["ids"]`."""
    max_new_tokens = max(len(ids) for ids in encoded) + EXTRA_OUTPUT_TOKENS

    def run() -> None:
        outputs["ids"] = peer.translate(
            encoded,
            num_beams=NUM_BEAMS,
            batch_size=size,
            batch_type="sents" if batching == "sentences" else "tokens",
            length_penalty=LENGTH_PENALTY,
            length_penalty_type="avg",
            max_new_tokens=max_new_tokens,
        )

    return run


def measure_setting(label: str, contenders: dict, warm_up: dict, outputs: dict, sentences: int, args, tokenizer, refs):
    """Time `contenders`, then score their last outputs: sentences/s, BLEU, ours over each peer, identity."""
    times = time_interleaved(contenders, args.repeats, warm_up)
    ids = {name: outputs[name]["ids"] for name in contenders}
    row = translation_row(times, ids, sentences, tokenizer, refs)
    row["ours_over"] = {peer: paired_speedup(times, peer) for peer in contenders if peer != "ours"}
    for peer in ("transformers_loop", "marian"):
        if peer in ids:
            row[f"identical_to_{peer}"] = ids["ours"] == ids[peer]
    print(f"{label}: " + ", ".join(f"{k} {v:.1f} sent/s" for k, v in row["sentences_per_s"].items()))
    return row


def markdown(results: dict) -> str:
    """The table of docs/performance.md: sentences/s per contender and setting, ours / each peer, BLEU."""
    names = CONTENDERS
    lines = [
        f"Beam {NUM_BEAMS}, fp32, {results['sentences']} sentences of test_2016_flickr, {results['device_name']} "
        f"({results['torch_threads']} threads), median of {results['repeats']} rounds. Sentences/s (BLEU):",
        "",
        "| batching | " + " | ".join(names) + " | ours / transformers loop | ours / eole |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for label, row in results["settings"].items():
        cells = [
            f"{row['sentences_per_s'][name]:.1f} ({row['bleu'][name]:.2f})" if name in row["sentences_per_s"] else "-"
            for name in names
        ]
        ratios = [
            f"{row['ours_over'][peer]['median']:.2f}x" if peer in row["ours_over"] else "-"
            for peer in ("transformers_loop", "eole")
        ]
        lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
    evaluation = results["main_job_evaluation"]
    lines += [
        "",
        f"The main job's test decoding and validation: {evaluation['before']} -> {evaluation['now']}: "
        f"{evaluation['ours_over_before']['median']:.2f}x faster. Token ids identical to transformers' loop in every "
        f"setting: {results['identical_to_transformers_loop']}. eole: {results['eole']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """CLI (benchmarks/README.md). Exits non-zero, after writing its results, if our token ids differ from
    transformers' loop's."""
    args = translation_arguments(GenerationArguments, argv, __doc__.split("\n\n")[0], quick=(40, 8))
    started = time.perf_counter()
    ours = VaswaniTransformerForConditionalGeneration.from_pretrained(args.model_dir).eval().to(args.device)
    tokenizer = VaswaniTransformerTokenizerFast.from_pretrained(args.model_dir)
    marian = to_marian(ours).eval().to(args.device)
    ours_bf16 = None
    if bf16_supported(args.device):
        ours_bf16 = VaswaniTransformerForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.bfloat16)
        ours_bf16 = ours_bf16.eval().to(args.device)
    sources, references = test_pairs(args.data_dir, args.sentences)
    validation_size = read_config_file(CPU_PRESET)["max_eval_samples"]  # the main job's validation sentences
    validation = read_lines(args.data_dir / f"{DEFAULT_SPLITS['validation']}.en.gz")[:validation_size]
    encoded = tokenizer(sources)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    peer, eole_status = None, f"eole {'' if eole_available() else 'not '}installed"
    if eole_available():
        eole_dir = Path(tempfile.mkdtemp(prefix="vaswani-eole-"))
        peer = EoleTranslator(convert_to_eole(args.model_dir, eole_dir / "model"), device=args.device)
        eole_status = f"eole {EOLE_VERSION}, same weights (benchmarks.eole_peer), its own beam search, n_best=1"
    else:
        print(f"eole is not installed (pip install eole=={EOLE_VERSION} aiohttp): its rows are skipped")

    def translator(model, batches, outputs: dict, loop: bool = False, ids=encoded):
        extra = {"custom_generate": transformers_decoding_loop} if loop else {}
        return hf_translator(model, tokenizer, ids, batches, args.device, outputs, **extra)

    settings: dict[str, dict] = {}
    few = length_sorted_batches(lengths[:8], max_tokens=ALL)
    for label, batching, size in SETTINGS:
        count = args.batch1_sentences if size == 1 else len(sources)
        limits = {"max_tokens": ALL, "max_sentences": size} if batching == "sentences" else {"max_tokens": size}
        batches = length_sorted_batches(lengths[:count], **limits)
        outputs: dict[str, dict] = {name: {} for name in CONTENDERS}
        contenders = {"ours": translator(ours, batches, outputs["ours"])}
        warm_up = {"ours": translator(ours, few, {})}
        contenders["transformers_loop"] = translator(ours, batches, outputs["transformers_loop"], loop=True)
        if ours_bf16 is not None and size == DEFAULT_MAX_TOKENS:
            contenders["ours_bf16"] = translator(ours_bf16, batches, outputs["ours_bf16"])
            warm_up["ours_bf16"] = translator(ours_bf16, few, {})
        if label in MARIAN_SETTINGS:
            contenders["marian"] = translator(marian, batches, outputs["marian"])
        if peer is not None:
            contenders["eole"] = eole_translator(peer, encoded[:count], batching, size, outputs["eole"])
            warm_up["eole"] = eole_translator(peer, encoded[:8], "sentences", 8, {})
        row = measure_setting(label, contenders, warm_up, outputs, count, args, tokenizer, references)
        settings[label] = {"batching": batching, "size": size, **row}

    # File order: generate() on consecutive sentences, ours and transformers' loop.
    for size in FILE_ORDER_SETTINGS:
        batches = [list(range(start, min(start + size, len(sources)))) for start in range(0, len(sources), size)]
        outputs = {"ours": {}, "transformers_loop": {}}
        contenders = {
            "ours": translator(ours, batches, outputs["ours"]),
            "transformers_loop": translator(ours, batches, outputs["transformers_loop"], loop=True),
        }
        label = f"batch {size}, file order"
        row = measure_setting(label, contenders, {}, outputs, len(sources), args, tokenizer, references)
        settings[label] = {"batching": "file order", "size": size, **row}

    # The main job's evaluation (test split) and validation: before (batches of 64 sorted sentences, transformers'
    # loop) and now (the default token budget, our beam search), each contender translating both in turn.
    evaluation = {"ours": [], "before": []}
    for texts in (sources, validation):
        ids = tokenizer(texts)["input_ids"]
        lengths_now = [len(x) for x in ids]
        now, before = length_sorted_batches(lengths_now), length_sorted_batches(lengths_now, ALL, 64)
        evaluation["ours"].append(translator(ours, now, {}, ids=ids))
        evaluation["before"].append(translator(ours, before, {}, loop=True, ids=ids))
    main_job = {name: lambda runs=runs: [run() for run in runs] for name, runs in evaluation.items()}
    pairs = time_interleaved(main_job, args.repeats, warm_up={})
    if peer is not None:
        peer.close()

    results = {
        **environment(args.device),
        "model": args.model_dir,
        "sentences": len(sources),
        "repeats": args.repeats,
        "quick": args.quick,
        "eole": eole_status,
        "settings": settings,
        "main_job_evaluation": {
            "before": "batches of 64 sorted sentences, transformers' beam search",
            "now": f"batches of {DEFAULT_MAX_TOKENS} padded source tokens, our beam search",
            "seconds": pairs,
            "ours_over_before": paired_speedup(pairs, "before"),
        },
        "identical_to_transformers_loop": all(
            row.get("identical_to_transformers_loop", True) for row in settings.values()
        ),
        "wall_seconds": time.perf_counter() - started,
    }
    stem = write_report(results, args.output, f"{results['machine']}-generation", markdown(results))
    print(f"wrote {stem}.json and .md in {results['wall_seconds']:.0f} s")
    if not results["identical_to_transformers_loop"]:
        raise SystemExit("our beam search and transformers' loop produced different token ids; see the JSON")


if __name__ == "__main__":
    main()
