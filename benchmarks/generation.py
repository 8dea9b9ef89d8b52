"""Beam-4 translation speed of a trained model against its peers, by batch size, in one run.

    python -m benchmarks.generation --model_dir outputs/multi30k_en_de_cpu [--quick] [--device cpu|cuda]

Run from the repository root, on a machine that runs nothing else. Every contender translates the same Multi30k
test_2016_flickr sentences with the same weights, beam 4, length penalty 0.6, fp32; each timing is the median of
`--repeats` interleaved rounds (`benchmarks.timing.time_interleaved`, after one warm-up round on a few sentences).

Contenders:
- `ours`: `VaswaniTransformerForConditionalGeneration.generate()`, whose beam search is
  `generation_vaswani_transformer.beam_search` (finished sentences leave the batch);
- `transformers_loop`: the same model and batches through transformers' `GenerationMixin._beam_search` (what
  `generate()` ran before; its token ids must equal ours, else the run fails after writing its results);
- `ours_bf16`: ours with the weights cast to bfloat16 (where the CPU has bf16 instructions, or on CUDA), at the
  default budget only; its BLEU is reported beside fp32's (its token ids may differ: other rounding);
- `marian`: MarianMT holding the same weights (`convert.to_marian`), the same batches;
- `eole`: eole 0.6.4 (OpenNMT's successor, plain PyTorch) holding the same weights (`benchmarks.eole_peer`, with
  eole's own beam search, batching and default stopping rule, `n_best=1`); only when eole is installed
  (`pip install eole==0.6.4 aiohttp`), else skipped with a message.

Batching: "sorted" rows translate the sentences longest first (`length_sorted_batches`, what the pipeline,
`vaswani-evaluate`, validation and `examples/translate.py` do) in batches of N sentences or of a padded-source-token
budget; eole sorts its own way (buckets by length). "file order" rows call `generate()` on consecutive sentences, as a
plain loop over a file would. Batch 1 runs on the first `--batch1_sentences` sentences only (it is slow).
`main_job_evaluation` compares what the README's main job does when it scores the test split and validates: before
this change (batches of 64 sorted sentences, transformers' loop) and now (the default budget, our beam search).

Writes `<output>/<machine>-generation.json` (every time, median, ratio, BLEU, identity check) and `.md` (the table
the README shows).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import sacrebleu
import torch
import transformers
from transformers import GenerationMixin

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.convert import to_marian
from vaswani_transformer.generation_vaswani_transformer import DEFAULT_MAX_TOKENS, length_sorted_batches
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.data import default_data_dir, read_lines
from vaswani_transformer.training.evaluation import EXTRA_OUTPUT_TOKENS

from . import RESULTS_DIR
from .data import test_pairs
from .eole_peer import EoleTranslator, convert_to_eole, eole_available
from .report import machine_name, write_report
from .timing import bf16_supported, paired_speedup, synchronize


__all__ = ["main"]

NUM_BEAMS = 4
LENGTH_PENALTY = 0.6
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


def in_transformers_loop(model, function: Callable[[], None]) -> Callable[[], None]:
    """`function`, run with `model.generate()` on transformers' `GenerationMixin._beam_search` instead of our
    override (what `generate()` ran before `generation_vaswani_transformer.beam_search`)."""

    def run() -> None:
        with mock.patch.object(type(model), "_beam_search", GenerationMixin._beam_search):
            function()

    return run


def generated_ids(row: list[int], eos_token_id: int) -> list[int]:
    """A `generate()` output row -> the generated ids after the start token, up to (without) the first EOS."""
    row = row[1:]
    return row[: row.index(eos_token_id)] if eos_token_id in row else row


def hf_translator(
    model,
    tokenizer,
    encoded: list[list[int]],
    batches: list[list[int]],
    device: str,
    outputs: dict,
    num_beams: int = NUM_BEAMS,
    max_new_tokens: int | None = None,
):
    """A callable that translates `encoded` in `batches` with `model.generate` (beam 4 unless `num_beams`, length
    penalty 0.6, early stopping, max_new_tokens = longest source + 50 per batch as `vaswani-evaluate` unless
    `max_new_tokens`), storing the generated ids of each sentence in `outputs["ids"]` (input order)."""

    def run() -> None:
        result: list[list[int]] = [[] for _ in encoded]
        with torch.inference_mode():
            for indices in batches:
                batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt").to(device)
                generated = model.generate(
                    **batch,
                    num_beams=num_beams,
                    length_penalty=LENGTH_PENALTY,
                    early_stopping=True,
                    do_sample=False,
                    max_new_tokens=max_new_tokens or batch["input_ids"].shape[1] + EXTRA_OUTPUT_TOKENS,
                )
                for index, row in zip(indices, generated.tolist(), strict=True):
                    result[index] = generated_ids(row, tokenizer.eos_token_id)
        synchronize(device)
        outputs["ids"] = result

    return run


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


def timed(contenders: dict[str, Callable[[], float | None]], warm_up: dict[str, Callable[[], object]], repeats: int):
    """Warm each contender up on `warm_up`, then `repeats` interleaved rounds; seconds per contender: the wall time
    of each call, or the seconds it returns (a contender that runs elsewhere and times itself)."""
    for function in warm_up.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, function in contenders.items():
            start = time.perf_counter()
            seconds = function()
            times[name].append(time.perf_counter() - start if seconds is None else seconds)
    return times


def bleu(tokenizer, ids: list[list[int]], references: list[str]) -> float:
    """sacreBLEU (13a, mixed case) of the decoded `ids` against `references`."""
    hypotheses = [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return sacrebleu.corpus_bleu(hypotheses, [references]).score


def measure_setting(
    contenders: dict[str, Callable[[], None]],
    warm_up: dict[str, Callable[[], None]],
    outputs: dict[str, dict],
    sentences: int,
    repeats: int,
    tokenizer,
    references: list[str],
) -> dict:
    """Time `contenders`, then score their last outputs: sentences/s, ratios of ours to each peer, BLEU, identity."""
    times = timed(contenders, warm_up, repeats)
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    row = {
        "sentences": sentences,
        "seconds": times,
        "median_seconds": medians,
        "sentences_per_s": {name: sentences / seconds for name, seconds in medians.items()},
        "bleu": {name: bleu(tokenizer, outputs[name]["ids"], references[:sentences]) for name in contenders},
        "ours_over": {peer: paired_speedup(times, peer) for peer in contenders if peer != "ours"},
    }
    if "transformers_loop" in outputs and "ours" in outputs:
        row["identical_to_transformers_loop"] = outputs["ours"]["ids"] == outputs["transformers_loop"]["ids"]
    if "marian" in outputs and "ours" in outputs:
        row["identical_to_marian"] = outputs["ours"]["ids"] == outputs["marian"]["ids"]
    return row


def markdown(results: dict) -> str:
    """The README's table: sentences/s per contender and setting, ours / each peer, BLEU."""
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


def translation_benchmark_arguments(
    description: str, argv: list[str] | None, repeats: int, quick: tuple[int, int], device: bool = False
) -> argparse.Namespace:
    """Parse the arguments the translation benchmarks share (this module and ``benchmarks/deploy.py``).

    ``--model_dir``, ``--data_dir``, ``--output``, ``--repeats`` (default ``repeats`` rounds), ``--sentences``,
    ``--batch1_sentences`` and ``--quick``, which sets ``(sentences, batch1_sentences) = quick`` and one round;
    ``device`` adds ``--device cpu|cuda``. Errors: argparse's (exit 2).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model_dir", required=True, help="A trained model directory (save_pretrained).")
    if device:
        parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data_dir", type=Path, default=default_data_dir(), help="The Multi30k folder.")
    parser.add_argument("--output", default=str(RESULTS_DIR))
    parser.add_argument("--repeats", type=int, default=repeats, help="Timed rounds per contender.")
    parser.add_argument("--sentences", type=int, default=1000, help="test_2016_flickr sentences (1,000 in all).")
    parser.add_argument("--batch1_sentences", type=int, default=200, help="Sentences timed at batch size 1.")
    parser.add_argument(
        "--quick", action="store_true", help=f"A smoke run: {quick[0]} sentences ({quick[1]} at batch 1), 1 round."
    )
    args = parser.parse_args(argv)
    if args.quick:
        (args.sentences, args.batch1_sentences), args.repeats = quick, 1
    return args


def main(argv: list[str] | None = None) -> None:
    """CLI (see the module docstring). Exits non-zero if our token ids differ from transformers' loop's."""
    args = translation_benchmark_arguments(__doc__.splitlines()[0], argv, repeats=3, quick=(40, 8), device=True)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: ids must match transformers' loop
    started = time.perf_counter()
    ours = VaswaniTransformerForConditionalGeneration.from_pretrained(args.model_dir).eval().to(args.device)
    tokenizer = VaswaniTransformerTokenizerFast.from_pretrained(args.model_dir)
    marian = to_marian(ours).eval().to(args.device)
    ours_bf16 = None
    if bf16_supported(args.device):
        ours_bf16 = VaswaniTransformerForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.bfloat16)
        ours_bf16 = ours_bf16.eval().to(args.device)
    sources, references = test_pairs(args.data_dir, args.sentences)
    validation = read_lines(args.data_dir / "val.en.gz")[:200]
    encoded = tokenizer(sources)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    peer = None
    eole_status = f"eole {'' if eole_available() else 'not '}installed"
    if eole_available():
        eole_dir = Path(tempfile.mkdtemp(prefix="vaswani-eole-"))
        peer = EoleTranslator(convert_to_eole(args.model_dir, eole_dir / "model"), device=args.device)
        eole_status = "eole 0.6.4, same weights (benchmarks.eole_peer), its own beam search, n_best=1"
    else:
        print("eole is not installed (pip install eole==0.6.4 aiohttp): its rows are skipped")

    settings: dict[str, dict] = {}
    for label, batching, size in SETTINGS:
        count = args.batch1_sentences if size == 1 else len(sources)
        if batching == "sentences":
            batches = length_sorted_batches(lengths[:count], max_tokens=10**9, max_sentences=size)
        else:
            batches = length_sorted_batches(lengths[:count], max_tokens=size)
        outputs: dict[str, dict] = {name: {} for name in CONTENDERS}
        few = length_sorted_batches(lengths[:8], max_tokens=10**9)
        contenders = {"ours": hf_translator(ours, tokenizer, encoded, batches, args.device, outputs["ours"])}
        warm_up = {"ours": hf_translator(ours, tokenizer, encoded, few, args.device, {})}
        loop = hf_translator(ours, tokenizer, encoded, batches, args.device, outputs["transformers_loop"])
        contenders["transformers_loop"] = in_transformers_loop(ours, loop)
        if ours_bf16 is not None and size == DEFAULT_MAX_TOKENS:
            contenders["ours_bf16"] = hf_translator(
                ours_bf16, tokenizer, encoded, batches, args.device, outputs["ours_bf16"]
            )
            warm_up["ours_bf16"] = hf_translator(ours_bf16, tokenizer, encoded, few, args.device, {})
        if label in MARIAN_SETTINGS:
            contenders["marian"] = hf_translator(marian, tokenizer, encoded, batches, args.device, outputs["marian"])
        if peer is not None:
            contenders["eole"] = eole_translator(peer, encoded[:count], batching, size, outputs["eole"])
            warm_up["eole"] = eole_translator(peer, encoded[:8], "sentences", 8, {})
        outputs = {name: value for name, value in outputs.items() if name in contenders}
        settings[label] = {
            "batching": batching,
            "size": size,
            **measure_setting(contenders, warm_up, outputs, count, args.repeats, tokenizer, references),
        }
        print(
            f"{label}: "
            + ", ".join(f"{name} {value:.1f} sent/s" for name, value in settings[label]["sentences_per_s"].items())
        )

    # File order: generate() on consecutive sentences, ours and transformers' loop.
    for size in FILE_ORDER_SETTINGS:
        batches = [list(range(start, min(start + size, len(sources)))) for start in range(0, len(sources), size)]
        outputs = {"ours": {}, "transformers_loop": {}}
        contenders = {
            "ours": hf_translator(ours, tokenizer, encoded, batches, args.device, outputs["ours"]),
            "transformers_loop": in_transformers_loop(
                ours, hf_translator(ours, tokenizer, encoded, batches, args.device, outputs["transformers_loop"])
            ),
        }
        label = f"batch {size}, file order"
        settings[label] = {
            "batching": "file order",
            "size": size,
            **measure_setting(contenders, {}, outputs, len(sources), args.repeats, tokenizer, references),
        }
        print(f"{label}: " + ", ".join(f"{k} {v:.1f} sent/s" for k, v in settings[label]["sentences_per_s"].items()))

    # The main job's evaluation (test split) and validation (200 val sentences): before and now.
    evaluation_times = {"ours": [], "before": []}
    for _ in range(args.repeats):
        for texts in (sources, validation):
            ids = tokenizer(texts)["input_ids"]
            now = length_sorted_batches([len(x) for x in ids])
            before = length_sorted_batches([len(x) for x in ids], max_tokens=10**9, max_sentences=64)
            start = time.perf_counter()
            hf_translator(ours, tokenizer, ids, now, args.device, {})()
            evaluation_times["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            in_transformers_loop(ours, hf_translator(ours, tokenizer, ids, before, args.device, {}))()
            evaluation_times["before"].append(time.perf_counter() - start)
    pairs = {name: [a + b for a, b in zip(t[::2], t[1::2], strict=True)] for name, t in evaluation_times.items()}
    if peer is not None:
        peer.close()

    results = {
        "machine": machine_name(args.device),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
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
