"""Learn the shared source-target BPE vocabulary (§5.1) from a parallel corpus.

    python training/train_tokenizer.py --output_dir tokenizers/multi30k_en_de --vocab_size 8000

A thin script over `vaswani_transformer.training.cli` (the BPE training is `training.tokenizer_training`),
installed as the `vaswani-train-tokenizer` command too (`pip install "vaswani_transformer[train]"`); `--help` lists
the arguments.
"""

from vaswani_transformer.training.cli import train_tokenizer


if __name__ == "__main__":
    raise SystemExit(train_tokenizer())
