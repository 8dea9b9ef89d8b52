"""Kept for old commands: `python examples/translate.py --model DIR < in > out` is `vaswani-translate` (see
vaswani_transformer/translate_cli.py and docs/decoding.md)."""

import sys

from vaswani_transformer.translate_cli import translate


sys.exit(translate())
