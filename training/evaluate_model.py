"""Translate a split with beam search (§6.1) and score it with sacreBLEU and chrF.

    python training/evaluate_model.py --model outputs/multi30k_en_de_cpu --split test_2016_flickr

A thin script over `vaswani_transformer.training.evaluate_cli`, installed as the `vaswani-evaluate` command too
(`pip install "vaswani_transformer[train]"`); `--help` lists the arguments.
"""

from vaswani_transformer.training.cli import evaluate


if __name__ == "__main__":
    raise SystemExit(evaluate())
