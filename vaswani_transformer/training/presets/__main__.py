"""Print where the installed presets are: `python -m vaswani_transformer.training.presets [NAME]`.

Without NAME: each training preset and accelerate config with its path. With NAME: the path of that file alone, for
`accelerate launch --config_file "$(python -m vaswani_transformer.training.presets accelerate_fsdp2)" ...`.
A name that is not a preset prints one error line listing the names and exits with status 2 (`command_line.run`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from vaswani_transformer.command_line import parse_arguments, run
from vaswani_transformer.training.presets import PRESETS_DIR, accelerate_config_names, preset_names


@dataclass
class PresetArguments:
    name: str | None = field(default=None, metadata={"help": "A preset or accelerate config name (none: list all)."})


def main(argv: Sequence[str] | None = None) -> int:
    """Print the path of preset `name`, or every preset's name and path.

    Raises:
        FileNotFoundError: if `name` is not a preset or accelerate config (lists the names).
    """
    names = preset_names() + accelerate_config_names()
    if not list(sys.argv[1:] if argv is None else argv):
        for name in names:
            print(f"{name}\t{PRESETS_DIR / (name + '.yaml')}")
        return 0
    prog, description = "python -m vaswani_transformer.training.presets", __doc__.split("\n\n")[0]
    args = parse_arguments(PresetArguments, argv, prog=prog, description=description, positional=["name"])
    name = args.name.removesuffix(".yaml")
    if name not in names:
        raise FileNotFoundError(f"no preset named {args.name}; presets: {', '.join(names)}")
    print(PRESETS_DIR / f"{name}.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, prog="python -m vaswani_transformer.training.presets"))
