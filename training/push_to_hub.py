"""Upload a finished run's model, tokenizer, code and model card to the Hugging Face Hub.

    python training/push_to_hub.py outputs/multi30k_en_de_cpu --repo_id your-name/transformer-multi30k-en-de

A thin script over `vaswani_transformer.training.cli` (the upload is `training.hub`), installed as the
`vaswani-push-to-hub` command too (`pip install "vaswani_transformer[train]"`); `--help` lists the arguments.
"""

from vaswani_transformer.training.cli import push_to_hub


if __name__ == "__main__":
    raise SystemExit(push_to_hub())
