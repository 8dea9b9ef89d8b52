"""The presets: commented YAML files installed with the package, found by name or by path.

Two kinds of file live in this folder, one copy each:

- training presets (`multi30k_en_de_cpu.yaml`, `wmt14_en_de_base.yaml`, ...): values for `vaswani-train`'s flags,
  given as `--config multi30k_en_de_cpu` (by name) or `--config path/to/file.yaml` (by path);
- accelerate's own launcher configs (`accelerate_*.yaml`), passed to `accelerate launch --config_file PATH`;
  `python -m vaswani_transformer.training.presets accelerate_fsdp2` prints the path of one.

The rule a `--config` value follows (`resolve_config`): an existing file is used as given; otherwise a bare name
(no folder, with or without `.yaml`) is a training preset of this folder; anything else is an error that lists the
preset names.
"""

from __future__ import annotations

from pathlib import Path


__all__ = ["ACCELERATE_PREFIX", "PRESETS_DIR", "accelerate_config_names", "preset_names", "resolve_config"]

PRESETS_DIR = Path(__file__).resolve().parent
# accelerate's launcher configs share the folder; their names start with this, the training presets' never do.
ACCELERATE_PREFIX = "accelerate_"


def _names(accelerate: bool) -> list[str]:
    return sorted(
        path.stem for path in PRESETS_DIR.glob("*.yaml") if path.stem.startswith(ACCELERATE_PREFIX) == accelerate
    )


def preset_names() -> list[str]:
    """The names of the training presets (`vaswani-train --config NAME`), sorted."""
    return _names(accelerate=False)


def accelerate_config_names() -> list[str]:
    """The names of accelerate's launcher configs (`accelerate launch --config_file PATH`), sorted."""
    return _names(accelerate=True)


def resolve_config(value: str) -> Path:
    """The YAML file a `--config` value names: an existing file as given, else the training preset of that name.

    Raises:
        FileNotFoundError: if `value` is neither an existing file nor a preset name (the message lists the names);
            if it names one of accelerate's configs (they go to `accelerate launch --config_file`).
    """
    path = Path(value)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    if path.parent == Path(".") and name in preset_names():
        return PRESETS_DIR / f"{name}.yaml"
    if path.parent == Path(".") and name in accelerate_config_names():
        raise FileNotFoundError(
            f"{value} is accelerate's launcher config, not a training preset: give it to "
            f"`accelerate launch --config_file {PRESETS_DIR / (name + '.yaml')}`"
        )
    raise FileNotFoundError(
        f"config file not found: {value} (--config takes a YAML file or a preset name: {', '.join(preset_names())})"
    )
