"""Speed and memory of `vaswani_transformer` beside its peers. Run from the repository root:

    python -m benchmarks.run [--quick] [--device cpu|cuda]   training, translation, memory and MFU
    python -m benchmarks.tokenizer_throughput                the tokenizer against bare `tokenizers`
    python -m benchmarks.generation / benchmarks.deploy      beam search, and the CTranslate2 export, on Multi30k
    python -m benchmarks.training_rss --log RUN/log.jsonl    flat memory over a training run
    python -m benchmarks.scale.corpus --pairs N --output DIR a WMT-size corpus built from Multi30k
    python -m benchmarks.scale.run                           preprocessing, launch, memory, collator at 1M/4.5M
    python -m benchmarks.scale.gpu                           the base preset on one CUDA GPU at 4.5M pairs

Modules by concern: `contenders` (the three models and their training step), `data` (the tokenizer, the batch),
`timing`, `memory` (peak memory in worker subprocesses), `flops` (MFU), `report` (targets, table, chart).
"""

from pathlib import Path


__all__ = ["CACHE_DIR", "REPO_ROOT", "RESULTS_DIR"]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"  # <machine>.json, .md, .png (read by the README)
CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"  # tokenizers learnt for the benchmark (git-ignored)
