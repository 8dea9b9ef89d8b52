"""Translation speed of the CTranslate2 export against our generate() and MarianMT, greedy and beam 4, in one run (how
to run it and what it writes: benchmarks/README.md).

Contenders, every one on the same sentences in the same length-sorted batches, greedy or beam 4 (length penalty 0.6,
early stopping): `ours`, `ours_bf16` (`generate()`, fp32 and bf16 weights), `marian` (`convert.to_marian`), and
`ct2_*`: the export (`vaswani_transformer.export`, float32 and int8) through `export.Translator`, each engine in a
process of its own (`CTranslate2Process`) with the threads of `CT2_ENGINES`. CTranslate2 float32 and Marian must give
exactly our fp32 token ids.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ctranslate2
import torch

from vaswani_transformer import VaswaniTransformerForConditionalGeneration
from vaswani_transformer.batching_vaswani_transformer import length_sorted_batches
from vaswani_transformer.convert import to_marian
from vaswani_transformer.export import Translator, export_ctranslate2
from vaswani_transformer.tokenization_vaswani_transformer_fast import VaswaniTransformerTokenizerFast
from vaswani_transformer.training.evaluation import EXTRA_OUTPUT_TOKENS

from .data import test_pairs
from .report import environment, write_report
from .timing import bf16_supported, paired_speedup, time_interleaved
from .translation import (
    LENGTH_PENALTY,
    NUM_BEAMS,
    TranslationArguments,
    hf_translator,
    strip_eos,
    translation_arguments,
    translation_row,
)


__all__ = ["main", "markdown"]

SEARCHES = {"greedy": 1, "beam 4": NUM_BEAMS}
BATCH_SIZES = (1, 64)
CONTENDERS = ("ours", "ours_bf16", "marian", "ct2_float32", "ct2_float32_x2", "ct2_int8", "ct2_int8_x2")
# CTranslate2 engines: (weights, intra_threads, inter_threads) on this machine's `threads` cores. One translation at a
# time with every core (float32) is what `generate()` does; "_x2" is CTranslate2's multi-core throughput setting,
# one thread per translation and as many translations in parallel as cores (batches queued by `Translator.generate`).
# int8 runs one thread per translation in both: with two, its oneDNN kernels ran several times slower on this CPU.
CT2_ENGINES = {
    "ct2_float32": ("float32", "all", 1),
    "ct2_float32_x2": ("float32", 1, "all"),
    "ct2_int8": ("int8", 1, 1),
    "ct2_int8_x2": ("int8", 1, "all"),
}
# Must give exactly our fp32 token ids (same math in fp32); the others are compared by BLEU.
IDENTICAL = ("marian", "ct2_float32", "ct2_float32_x2")


@dataclasses.dataclass
class DeployArguments(TranslationArguments):
    """`python -m benchmarks.deploy` (benchmarks/README.md)."""

    repeats: int = dataclasses.field(default=2, metadata={"help": "Timed rounds per contender."})


def ct2_translate(
    translator: Translator, encoded: list[list[int]], count: int, batch_size: int, num_beams: int
) -> list[list[int]]:
    """Translate the first `count` of `encoded` with CTranslate2 (`Translator.generate`, which makes the batches of
    `batch_size` sentences that `length_sorted_batches` makes for the other contenders), with the settings of
    `hf_translator` and max_new_tokens = the longest source + 50. The generated ids of each sentence, without `</s>`,
    in input order."""
    sources = encoded[:count]
    generated = translator.generate(
        sources,
        num_beams=num_beams,
        length_penalty=LENGTH_PENALTY,
        max_new_tokens=max(len(ids) for ids in sources) + EXTRA_OUTPUT_TOKENS,
        max_tokens=10**9,
        batch_size=batch_size,
    )
    return [strip_eos(ids, translator.tokenizer.eos_token_id) for ids in generated]


def ct2_worker(connection, directory: str, intra_threads: int, inter_threads: int, encoded: list[list[int]]) -> None:
    """A CTranslate2 process: load the model, then answer `(count, batch_size, num_beams)` requests with
    `(seconds, ids)` from `ct2_translate`, until it receives None."""
    translator = Translator(directory, intra_threads=intra_threads, inter_threads=inter_threads)
    connection.send("ready")
    while (request := connection.recv()) is not None:
        start = time.perf_counter()
        ids = ct2_translate(translator, encoded, *request)
        connection.send((time.perf_counter() - start, ids))


class CTranslate2Process:
    """One CTranslate2 model in a process of its own, as it is deployed. In one process with PyTorch, after torch has
    run, or with a second `ctranslate2.Translator`, CTranslate2 ran several times slower on this machine (separate
    OpenMP runtimes and thread pools competing for two cores): that would measure their coexistence, not CTranslate2.
    """

    def __init__(self, directory: Path, intra_threads: int, inter_threads: int, encoded: list[list[int]]):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        args = (child, str(directory), intra_threads, inter_threads, encoded)
        self.process = context.Process(target=ct2_worker, args=args, daemon=True)
        self.process.start()
        while not self.connection.poll(1):  # a process that dies while loading never answers
            if not self.process.is_alive():
                raise RuntimeError(f"the CTranslate2 process for {directory} ended before it was ready (its stderr)")
        if self.connection.recv() != "ready":
            raise RuntimeError(f"the CTranslate2 process for {directory} did not start")

    def translator(self, count: int, batch_size: int, num_beams: int, outputs: dict) -> Callable[[], float]:
        """A callable that has the process translate, stores the ids in `outputs["ids"]` and returns the seconds the
        translation took there (the transfer of inputs and ids not counted)."""

        def run() -> float:
            self.connection.send((count, batch_size, num_beams))
            seconds, outputs["ids"] = self.connection.recv()
            return seconds

        return run

    def close(self) -> None:
        self.connection.send(None)
        self.process.join(timeout=60)


def measure(contenders: dict, warm_up: dict, outputs: dict[str, dict], count: int, repeats: int, tokenizer, refs):
    """Time `contenders`; sentences/s, tokens/s, speed-ups over ours, BLEU and identity with ours for each."""
    times = time_interleaved(contenders, repeats, warm_up)
    ids = {name: outputs[name]["ids"][:count] for name in contenders}  # the sentences translated
    row = translation_row(times, ids, count, tokenizer, refs)
    row["generated_tokens"] = {name: sum(len(sentence) for sentence in ids[name]) for name in contenders}
    row["tokens_per_s"] = {name: row["generated_tokens"][name] / row["median_seconds"][name] for name in contenders}
    peers = [name for name in contenders if name != "ours"]
    row["speedup_over_ours"] = {name: paired_speedup(times, "ours", base=name) for name in peers}
    row["identical_to_ours"] = {
        name: sum(a == b for a, b in zip(ids[name], ids["ours"], strict=True)) for name in contenders
    }
    return row


def markdown(results: dict) -> str:
    """docs/performance.md's table: sentences/s, tokens/s, speed-up over ours and BLEU per contender and setting."""
    ct2_threads = ", ".join(
        f"{name} {engine['intra_threads']} x {engine['inter_threads']}"
        for name, engine in results["ct2_engines"].items()
    )
    lines = [
        f"{results['sentences']} sentences of test_2016_flickr (batch 1: the first {results['batch1_sentences']}), "
        f"{results['device_name']}, {results['threads']} threads for the PyTorch engines, CTranslate2 threads per "
        f"translation x translations in parallel: {ct2_threads}; median of {results['repeats']} rounds. "
        "Sentences/s, generated tokens/s, speed-up over ours fp32, sacreBLEU, sentences identical to ours:",
        "",
        "| search | batch | engine | sentences/s | tokens/s | x ours fp32 | BLEU | identical |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in results["settings"].items():
        search, batch = label.rsplit(", batch ", 1)
        for name in row["sentences_per_s"]:
            speedup = row["speedup_over_ours"][name]["median"] if name != "ours" else 1.0
            lines.append(
                f"| {search} | {batch} | {name} | {row['sentences_per_s'][name]:.1f} | "
                f"{row['tokens_per_s'][name]:.0f} | {speedup:.2f}x | {row['bleu'][name]:.2f} | "
                f"{row['identical_to_ours'][name]}/{row['sentences']} |"
            )
    export = results["export"]
    lines += [
        "",
        f"Export: float32 {export['float32']['seconds']:.1f} s, {export['float32']['bytes'] / 2**20:.1f} MiB; "
        f"int8 {export['int8']['seconds']:.1f} s, {export['int8']['bytes'] / 2**20:.1f} MiB "
        f"(ctranslate2 {results['versions']['ctranslate2']}). Identical ids where required: "
        f"{results['identical_where_required']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """CLI (benchmarks/README.md). Exits non-zero, after writing its results, if CTranslate2 fp32 or Marian ids differ
    from ours."""
    args = translation_arguments(DeployArguments, argv, __doc__.split("\n\n")[0], quick=(24, 4))
    started = time.perf_counter()
    threads = torch.get_num_threads()
    ours = VaswaniTransformerForConditionalGeneration.from_pretrained(args.model_dir).eval()
    tokenizer = VaswaniTransformerTokenizerFast.from_pretrained(args.model_dir)
    engines = {"ours": ours, "marian": to_marian(ours).eval()}
    if bf16_supported("cpu"):
        engines["ours_bf16"] = VaswaniTransformerForConditionalGeneration.from_pretrained(
            args.model_dir, dtype=torch.bfloat16
        ).eval()
    sources, references = test_pairs(args.data_dir, args.sentences)
    encoded = tokenizer(sources)["input_ids"]
    lengths = [len(ids) for ids in encoded]
    cores = {"all": threads}
    ct2_engines = {
        name: {"weights": weights, "intra_threads": cores.get(intra, intra), "inter_threads": cores.get(inter, inter)}
        for name, (weights, intra, inter) in CT2_ENGINES.items()
    }
    export_dir = Path(tempfile.mkdtemp(prefix="vaswani-ct2-"))
    export, directories, ct2 = {}, {}, {}
    try:
        for quantization, name in (("none", "float32"), ("int8", "int8")):
            start = time.perf_counter()
            directories[name] = export_ctranslate2(args.model_dir, export_dir / name, quantization)
            export[name] = {
                "seconds": time.perf_counter() - start,
                "bytes": (directories[name] / "model.bin").stat().st_size,
            }
        for name, engine in ct2_engines.items():
            ct2[name] = CTranslate2Process(
                directories[engine["weights"]], engine["intra_threads"], engine["inter_threads"], encoded
            )
        engines.update(ct2)

        def translator(name: str, count: int, batch_size: int, num_beams: int, outputs: dict) -> Callable:
            if name in ct2:
                return ct2[name].translator(count, batch_size, num_beams, outputs)
            batches = length_sorted_batches(lengths[:count], max_tokens=10**9, max_sentences=batch_size)
            cap = max(lengths[:count]) + EXTRA_OUTPUT_TOKENS  # as ct2_translate's
            return hf_translator(engines[name], tokenizer, encoded, batches, "cpu", outputs, num_beams, cap)

        settings: dict[str, dict] = {}
        for search, num_beams in SEARCHES.items():
            for batch_size in BATCH_SIZES:
                count = args.batch1_sentences if batch_size == 1 else len(sources)
                names = [name for name in CONTENDERS if name in engines]
                outputs: dict[str, dict] = {name: {} for name in names}
                contenders = {name: translator(name, count, batch_size, num_beams, outputs[name]) for name in names}
                warm_up = {name: translator(name, 8, 8, num_beams, {}) for name in names}
                label = f"{search}, batch {batch_size}"
                settings[label] = measure(contenders, warm_up, outputs, count, args.repeats, tokenizer, references)
                rates = settings[label]["sentences_per_s"]
                print(f"{label}: " + ", ".join(f"{k} {v:.1f} sent/s" for k, v in rates.items()))

    finally:  # also on an error: no CTranslate2 process or exported model is left behind
        for process in ct2.values():
            process.close()
        shutil.rmtree(export_dir, ignore_errors=True)
    results = {**environment("cpu"), "threads": threads}
    results["versions"]["ctranslate2"] = ctranslate2.__version__
    results |= {
        "model": args.model_dir,
        "sentences": len(sources),
        "batch1_sentences": args.batch1_sentences,
        "repeats": args.repeats,
        "quick": args.quick,
        "num_beams": NUM_BEAMS,
        "length_penalty": LENGTH_PENALTY,
        "export": export,
        "ct2_engines": ct2_engines,
        "settings": settings,
        "identical_where_required": all(
            row["identical_to_ours"][name] == row["sentences"] for row in settings.values() for name in IDENTICAL
        ),
        "wall_seconds": time.perf_counter() - started,
    }
    stem = write_report(results, args.output, f"{results['machine']}-deploy", markdown(results))
    print(f"wrote {stem}.json and .md in {results['wall_seconds']:.0f} s")
    if not results["identical_where_required"]:
        raise SystemExit(f"{' or '.join(IDENTICAL)} produced other token ids than ours; see the JSON")


if __name__ == "__main__":
    main()
