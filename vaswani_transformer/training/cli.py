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
import os
import sys
from collections.abc import Callable, Sequence


__all__ = [
    "USER_ERRORS",
    "average_checkpoints",
    "evaluate",
    "model_card",
    "plot_bleu_curve",
    "push_to_hub",
    "run",
    "train",
    "train_tokenizer",
]

USER_ERRORS = (ValueError, OSError, ImportError)
DEBUG_FLAG = "--debug"


def one_line(error: BaseException) -> str:
    """The error's message on one line: its lines joined with " | " (a message never spans lines on stderr)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " | ".join(lines) or type(error).__name__


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Call `main(argv)` and return the exit status: its own (None -> 0), or 2 after a user error.

    Args:
        main: a module's `main(argv) -> int | None`.
        argv: the arguments (default `sys.argv[1:]`); `--debug` is removed from them and re-raises user errors.
        prog: the program name for the error line (default: the basename of `sys.argv[0]`).

    Returns:
        The exit status for `SystemExit`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        status = main(argv)
    except USER_ERRORS as error:
        if debug:
            raise
        name = prog or os.path.basename(sys.argv[0]) or "vaswani"
        print(f"{name}: error: {one_line(error)} (run with {DEBUG_FLAG} for the traceback)", file=sys.stderr)
        return 2
    return 0 if status is None else int(status)


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
