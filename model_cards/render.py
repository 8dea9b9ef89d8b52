"""Render the model card (`README.md`) of a finished training run: a thin script over
`vaswani_transformer.training.model_card`, installed as the `vaswani-model-card` command too.

    python model_cards/render.py outputs/multi30k_en_de_cpu
    python model_cards/render.py outputs/multi30k_en_de_cpu --repo_id your-name/transformer-multi30k-en-de

`training/train.py` already writes the card at the end of every run; this re-renders it (with a Hub repository id,
for example). `--help` lists the arguments.
"""

from vaswani_transformer.training.cli import model_card


if __name__ == "__main__":
    raise SystemExit(model_card())
