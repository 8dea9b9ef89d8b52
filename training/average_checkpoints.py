"""Average the weights of the last K checkpoints of a run (§6.1).

    python training/average_checkpoints.py --checkpoint_dir outputs/multi30k_en_de_cpu --last_k 5 --output averaged

A thin script over `vaswani_transformer.training.cli` (the averaging is `training.averaging`), installed as the
`vaswani-average-checkpoints` command too (`pip install "vaswani_transformer[train]"`); `--help` lists the arguments.
"""

from vaswani_transformer.training.cli import average_checkpoints


if __name__ == "__main__":
    raise SystemExit(average_checkpoints())
