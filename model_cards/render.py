"""Render the model card of a finished training run and keep a copy here as an example, with the files it links.

    python model_cards/render.py outputs/multi30k_en_de_cpu
    python model_cards/render.py outputs/multi30k_en_de_cpu --hub_model_id your-name/transformer-multi30k-en-de

Writes `<run>/README.md`, as `vaswani-model-card` does (`training.model_card.render_model_card`), then copies the
card and the run files it links (the test translations `hyps_<split>.<lang>`, `results_<split>.json`,
`training_args.json`: files `vaswani-push-to-hub` uploads) into `model_cards/<run folder name>/`, replacing an
earlier copy of those files, so that the example's links work in this repository. `--into DIR` puts the copy in
`DIR/<run folder name>/` instead. Errors are one line (`command_line.run`), as `vaswani-model-card`'s.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vaswani_transformer.command_line import parse_arguments, run
from vaswani_transformer.training.model_card import render_model_card


# A Markdown link to a file beside the card: `[text](name)`, not a web address.
LOCAL_LINK = re.compile(r"\]\((?!https?://)([^)#\s]+)\)")


@dataclass
class RenderArguments:
    output_dir: str | None = field(default=None, metadata={"help": "The output_dir of a finished training run."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repository id, used as model name and in snippets."}
    )
    into: str = field(default=str(Path(__file__).resolve().parent), metadata={"help": "Folder of the example copies."})


def main(argv: Sequence[str] | None = None) -> int:
    """Render the card, copy it and the files it links into `<into>/<run folder name>/`, print that folder.

    Raises:
        FileNotFoundError, ValueError: from `render_model_card`, naming the run file at fault; a linked file that the
            run does not have.
    """
    args = parse_arguments(RenderArguments, argv, description=__doc__.split("\n\n")[0], positional=("output_dir",))
    run_dir = Path(args.output_dir)
    card = str(render_model_card(run_dir, args.hub_model_id))
    linked = sorted(set(LOCAL_LINK.findall(card)))
    missing = [name for name in linked if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: the card links {', '.join(missing)}, which the run does not have")
    example = Path(args.into) / run_dir.resolve().name
    example.mkdir(parents=True, exist_ok=True)
    for name in ["README.md", *linked]:
        shutil.copy(run_dir / name, example / name)
    print(example)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, prog=Path(__file__).name))
