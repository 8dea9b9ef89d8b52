"""Train the Transformer with the paper's recipe (§5) on a parallel corpus, through accelerate.

    accelerate launch training/train.py --config multi30k_en_de_cpu

A thin script over `vaswani_transformer.training.train`, installed as the `vaswani-train` command too
(`pip install "vaswani_transformer[train]"`); `--help` lists the arguments.
"""

from vaswani_transformer.training.cli import train


if __name__ == "__main__":
    raise SystemExit(train())
