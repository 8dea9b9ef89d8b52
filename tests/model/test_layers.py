"""Layers point one way: the core package (model, tokenizer, pipeline, generation, conversion, export) never imports
the training library, and `vaswani-export-ct2` runs with the `[export]` extra alone (no accelerate, no datasets).

Each check runs in a fresh interpreter (a subprocess): in this one, other tests have imported the training library.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT


# Every module of the core package that a user may import, the export's command included.
CORE_MODULES = (
    "vaswani_transformer",
    "vaswani_transformer.command_line",
    "vaswani_transformer.convert",
    "vaswani_transformer.export",
    "vaswani_transformer.export.cli",
    "vaswani_transformer.export.conversion",
    "vaswani_transformer.export.translator",
    "vaswani_transformer.output_dir",
)
# The packages of the `[train]` extra that the core must run without (its PyYAML is also huggingface_hub's).
TRAIN_EXTRA = ("accelerate", "datasets", "evaluate", "sacrebleu")

PROBE = """
import json, sys
for name in {hidden}:
    sys.modules[name] = None  # as if not installed: importing it raises ImportError, find_spec() gives None
import importlib
for name in {modules}:
    importlib.import_module(name)
from vaswani_transformer.export.cli import main
try:
    main(["--help"])
except SystemExit as exit:
    status = exit.code
print(json.dumps({{"status": status, "modules": sorted(name for name, module in sys.modules.items() if module)}}))
"""


def loaded_modules(hidden: tuple[str, ...] = ()) -> list[str]:
    """The modules a fresh interpreter holds after importing `CORE_MODULES` and running `vaswani-export-ct2 --help`,
    with the packages `hidden` made unimportable."""
    code = PROBE.format(hidden=list(hidden), modules=list(CORE_MODULES))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["status"] == 0, "vaswani-export-ct2 --help failed"
    return probe["modules"]


def test_core_never_imports_the_training_library():
    training = [name for name in loaded_modules() if name.startswith("vaswani_transformer.training")]
    assert training == [], f"the core package imported {training}"


def test_core_and_export_command_run_without_the_train_extra():
    """With the train extra's packages unimportable, every core module imports and `--help` runs (an import of
    one of them anywhere on the way fails the subprocess)."""
    modules = loaded_modules(TRAIN_EXTRA)
    assert {"vaswani_transformer.export.cli", "vaswani_transformer.modeling_vaswani_transformer"} <= set(modules)
    assert not [name for name in modules if name.split(".")[0] in TRAIN_EXTRA]
