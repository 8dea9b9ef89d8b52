"""The translation pipeline in five lines, on a saved model (`vaswani_transformer` need not be installed).

    python examples/pipeline_quickstart.py --model outputs/multi30k_en_de_cpu

transformers 5.x has no built-in "translation" pipeline; this model carries its own (`pipeline_translation.py`,
recorded in `config.json` as `custom_pipelines`), which `trust_remote_code=True` loads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from transformers import pipeline


SENTENCES = ["A man in a blue shirt is riding a bicycle.", "Two dogs are playing in the snow."]


def main(argv: Sequence[str] | None = None) -> None:
    """CLI (see the module docstring): prints one translation, then a batch of two."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A save_pretrained model directory or Hub repo id.")
    args = parser.parse_args(argv)

    translator = pipeline("translation", model=args.model, trust_remote_code=True)
    print(translator(SENTENCES[0]))  # [{'translation_text': ...}], decoding from generation_config.json
    for source, output in zip(SENTENCES, translator(SENTENCES, batch_size=2, num_beams=2), strict=True):
        print(f"{source} -> {output['translation_text']}")  # a list in, one dict per sentence out


if __name__ == "__main__":
    main()
