"""Plot validation BLEU against training minutes from a run's log.jsonl.

    python training/plot_bleu_curve.py outputs/multi30k_en_de_cpu --output docs/bleu_curve_multi30k.png

A thin script over `vaswani_transformer.training.cli` (the curve is `training.bleu_curve`), installed as the
`vaswani-plot-bleu-curve` command too (`pip install "vaswani_transformer[train]"`); `--help` lists the arguments.
"""

from vaswani_transformer.training.cli import plot_bleu_curve


if __name__ == "__main__":
    raise SystemExit(plot_bleu_curve())
