"""The command-line programs of the training library, with one rule for errors.

Every program (`vaswani-train`, `training/train.py`, ...) runs its module's `main(argv)` through `run`:

- a user error (bad flag, missing or corrupt file, a refused overwrite) prints one line,
  `<program>: error: <message>`, on stderr and exits with status 2, the status argparse gives a bad flag;
- anything else is a bug and keeps its traceback (exit status 1, Python's default);
- `--debug` anywhere on the command line shows the traceback of user errors too.

User errors are the exceptions the library raises for input it rejects: `ValueError` (and subclasses such as
`UnicodeDecodeError` re-raised with the file and line) and `OSError` (FileNotFoundError, FileExistsError,
PermissionError, IsADirectoryError, ...), and `ImportError` for a missing optional package (the message gives the
`pip install` line). Their messages name the argument, file or line at fault (see each module's
"Raises"). The tests call the modules' `main` directly and assert the exception; these wrappers are what the console
scripts in pyproject.toml and the thin scripts in `training/` call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from vaswani_transformer.command_line import run


__all__ = [
    "average_checkpoints",
    "evaluate",
    "model_card",
    "plot_bleu_curve",
    "push_to_hub",
    "train",
    "train_tokenizer",
]

def _command(module: str) -> Callable[[], int]:
    """A console-script function that runs `vaswani_transformer.training.<module>.main` through `run`."""

    def command(argv: Sequence[str] | None = None) -> int:
        return run(importlib.import_module(f"vaswani_transformer.training.{module}").main, argv)

    command.__name__ = module
    command.__doc__ = f"Run `vaswani_transformer.training.{module}.main` with the user-error rule of `run`."
    return command


train = _command("train")
evaluate = _command("evaluation")
average_checkpoints = _command("averaging")
train_tokenizer = _command("tokenizer_training")
push_to_hub = _command("hub")
plot_bleu_curve = _command("bleu_curve")
model_card = _command("model_card")
