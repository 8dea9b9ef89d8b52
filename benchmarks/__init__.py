"""Speed and memory of `vaswani_transformer` beside its peers: how to run each benchmark, and what each results file
holds, is in benchmarks/README.md."""

from pathlib import Path

from vaswani_transformer.training.presets import PRESETS_DIR


__all__ = ["BASE_PRESET", "CACHE_DIR", "CPU_PRESET", "REPO_ROOT", "RESULTS_DIR"]

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"  # <machine>[-<benchmark>].json, .md, .png (README, docs/ link them)
CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"  # tokenizers learnt for the benchmark (git-ignored)
CPU_PRESET = PRESETS_DIR / "multi30k_en_de_cpu.yaml"  # the Multi30k CPU preset
BASE_PRESET = PRESETS_DIR / "wmt14_en_de_base.yaml"  # the paper's base model on WMT 2014
