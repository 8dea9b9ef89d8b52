"""The paper's scale on this machine: WMT-size corpora built from Multi30k (`corpus`), preprocessing, launch and
memory on CPU (`run`), the input pipeline alone (`collator`), the base preset on one GPU (`gpu`); how to run each:
benchmarks/README.md."""

from vaswani_transformer.training.arguments import read_config_file

from .. import BASE_PRESET


__all__ = ["base_preset"]


def base_preset() -> dict:
    """The base preset's settings (`benchmarks.BASE_PRESET`, read by `training.arguments.read_config_file`): the
    batching and length limits the scale benchmarks measure with."""
    return read_config_file(BASE_PRESET)
