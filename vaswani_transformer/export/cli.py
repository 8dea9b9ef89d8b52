"""`vaswani-export-ct2`: export a saved model to a CTranslate2 model directory (`export_ctranslate2`).

    vaswani-export-ct2 outputs/multi30k_en_de_cpu outputs/multi30k_en_de_ct2 --quantization int8

Needs only the `[export]` extra (`pip install "vaswani_transformer[export]"`): neither this command nor the modules it
imports use the training library.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..command_line import parse_arguments, run
from .conversion import COMMAND, QUANTIZATIONS, export_ctranslate2


__all__ = ["ExportArguments", "export_ct2", "main"]


@dataclass
class ExportArguments:
    """Arguments of `vaswani-export-ct2` (parsed by `transformers.HfArgumentParser`; the two folders by position)."""

    model_dir: str | None = field(
        default=None, metadata={"help": "A save_pretrained model directory (or Hub id) with its tokenizer."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "The CTranslate2 model directory to write."})
    quantization: str = field(
        default="none",
        metadata={
            "help": "Weight type: none keeps float32; int8 weights take a quarter of the bytes "
            "(default: %(default)s).",
            "choices": QUANTIZATIONS,
        },
    )
    max_positions: int | None = field(
        default=None,
        metadata={
            "help": "Rows of the positional table: the longest source and output, in tokens (default: the longest of "
            "max_position_embeddings, the tokenizer's model_max_length and the generation config's output length)."
        },
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty output_dir."})


def main(argv: Sequence[str] | None = None) -> int:
    """`vaswani-export-ct2 MODEL_DIR OUTPUT_DIR [--quantization Q] [--max_positions N] [--overwrite_output_dir]`.

    Raises:
        FileExistsError, ValueError, OSError, ImportError: as `export_ctranslate2` (the console script prints one
            line and exits 2).
        SystemExit: status 2 for a bad or missing argument (argparse's message).
    """
    args = parse_arguments(
        ExportArguments,
        argv,
        prog=COMMAND,
        description="Export a vaswani_transformer model to a CTranslate2 model directory.",
        positional=("model_dir", "output_dir"),
    )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    export_ctranslate2(
        args.model_dir, args.output_dir, args.quantization, args.max_positions, args.overwrite_output_dir
    )
    return 0


def export_ct2(argv: Sequence[str] | None = None) -> int:
    """The `vaswani-export-ct2` console script: `main` with the user-error rule of `command_line.run`."""
    return run(main, argv, prog=COMMAND)
