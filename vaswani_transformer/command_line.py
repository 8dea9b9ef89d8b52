"""The two rules every command-line program of the package follows: arguments and errors.

Arguments: each program's arguments are one dataclass, parsed by transformers' `HfArgumentParser` (the
`TrainingArguments` convention: a field is a `--flag` with its type, default and help), through `parse_arguments`.
Fields that a program takes by position (`vaswani-export-ct2 MODEL_DIR OUTPUT_DIR`) are given by position or as
their flag, as transformers' own commands took a model path (`transformers chat MODEL`).

Errors: each program runs its `main(argv)` through `run`:

- a user error (bad flag, missing or corrupt file, a refused overwrite) prints one line,
  `<program>: error: <message>`, on stderr and exits with status 2, the status argparse gives a bad flag;
- anything else is a bug and keeps its traceback (exit status 1, Python's default);
- `--debug` anywhere on the command line shows the traceback of user errors too.

User errors are the exceptions the library raises for input it rejects: `ValueError` (and subclasses such as
`UnicodeDecodeError` re-raised with the file and line) and `OSError` (FileNotFoundError, FileExistsError,
PermissionError, IsADirectoryError, ...), and `ImportError` for a missing optional package (the message gives the
`pip install` line). Their messages name the argument, file or line at fault (see each module's "Raises"). Tests call
the programs' `main` directly and assert the exception; `run` is what the console scripts in pyproject.toml and the
thin scripts call.

This module imports only the standard library and transformers: the core package's programs
(`vaswani-export-ct2`) use it without the training library.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from transformers import HfArgumentParser


if TYPE_CHECKING:
    import torch


__all__ = ["DEBUG_FLAG", "USER_ERRORS", "one_line", "parse_arguments", "resolve_device", "run"]

USER_ERRORS = (ValueError, OSError, ImportError)
DEBUG_FLAG = "--debug"
# The attribute holding a positional value, apart from the field's own --flag.
_POSITIONAL = "{}_positional"

Arguments = TypeVar("Arguments")


def parse_arguments(
    arguments_class: type[Arguments],
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    positional: Sequence[str] = (),
) -> Arguments:
    """Parse `argv` into an `arguments_class` dataclass with transformers' `HfArgumentParser`.

    Args:
        arguments_class: the program's arguments; each field is a `--flag` (name, type, default, `help`, `choices`).
            `--help` appends each default to its help (`HfArgumentParser`'s formatter) unless the help names it
            itself with `%(default)s`.
        argv: the command-line arguments (default `sys.argv[1:]`).
        prog, description: what `--help` and argparse's errors show.
        positional: fields that may also be given by position, in this order, and must be given one way or the
            other. Each has the default None in `arguments_class` (a list field: an empty list), so that its flag is
            optional; a list field takes every remaining value (`plot_bleu_curve.py RUN_DIR [RUN_DIR ...]`).

    Returns:
        The `arguments_class` instance.

    Raises:
        SystemExit: status 2 after argparse's one-line error (an unknown flag, a value of the wrong type or not
            among the choices, a positional field missing or given twice), status 0 after `--help`.
        ValueError: as `arguments_class.__post_init__`.
    """
    parser = HfArgumentParser(arguments_class, prog=prog, description=description)
    fields = {field.name: field for field in dataclasses.fields(arguments_class)}
    group = parser.add_argument_group("positional arguments (or give each as its --flag)")
    for name in positional:
        many = fields[name].default_factory is list
        group.add_argument(
            _POSITIONAL.format(name),
            metavar=name.upper(),
            nargs="*" if many else "?",
            default=[] if many else None,
            help=fields[name].metadata.get("help"),
        )
    # Intermixed: positional values may come before, between or after the flags, as with argparse's positionals.
    values = vars(parser.parse_intermixed_args(argv))
    missing = []
    for name in positional:
        value, flag = values.pop(_POSITIONAL.format(name)), values[name]
        if value not in (None, []) and flag not in (None, []):
            parser.error(f"{name.upper()} is given twice: by position and as --{name}")
        values[name] = value if value not in (None, []) else flag
        if values[name] in (None, []):
            missing.append(name.upper())
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return arguments_class(**{name: values[name] for name, field in fields.items() if field.init})


def one_line(error: BaseException) -> str:
    """The error's message on one line: its lines joined with " | " (a message never spans lines on stderr)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " | ".join(lines) or type(error).__name__


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Call `main(argv)` and return the exit status: its own (None -> 0), or 2 after a user error.

    Args:
        main: a program's `main(argv) -> int | None`.
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


def resolve_device(name: str) -> torch.device:
    """The torch device a `--device` flag names (vaswani-translate, vaswani-evaluate), checked usable: "auto" picks
    "cuda" if `torch.cuda.is_available()`, else "cpu".

    Raises:
        ValueError: `--device <name>: <why>` for a malformed name, or a device this machine or this torch build does
            not have (e.g. cuda on a CPU-only build, cuda:3 with two GPUs).
    """
    import torch  # here, not at the top: the module otherwise needs only the standard library and transformers

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)  # raises for a device that is not there
    except (RuntimeError, AssertionError) as error:  # AssertionError: "Torch not compiled with CUDA enabled"
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--device {name}: {cause}") from error
    return device
