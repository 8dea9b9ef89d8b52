"""The package as a user outside this repository gets it: a wheel installed (not editable) into a fresh virtual
environment, used from a folder that is not the checkout.

The wheel is built from a copy of the package's files (`pip wheel --no-deps --no-build-isolation`, offline: setuptools
is this environment's) and installed with `--no-deps` into a new venv, which reaches this environment's dependencies
(torch, transformers, ...) through a `.pth` line. A path added by a `.pth` line is not itself scanned for `.pth` files,
so this environment's editable install (`__editable__.*.pth`) does not apply there: the test checks that
`vaswani_transformer.__file__` is inside the new venv. Then, from an empty folder: `--config multi30k_en_de_cpu` is
found by name; without data the run stops with the one-line error naming Multi30k's source; a 2-step run of the
preset with a tiny model on a few dozen Multi30k lines, in `./data/multi30k` (`default_data_dir()`'s rule), writes a
model card with everything a Hub visitor needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from conftest import OFFLINE, REPO_ROOT, read_multi30k


pytestmark = pytest.mark.slow  # a wheel build and a training run in new processes

# The files a wheel is built from (pyproject.toml names README.md as the long description; LICENSE goes in).
PACKAGE_FILES = ["pyproject.toml", "README.md", "LICENSE", "vaswani_transformer"]
TINY_MODEL = (
    "--model custom --d_model 16 --encoder_layers 1 --decoder_layers 1 --encoder_attention_heads 2 "
    "--decoder_attention_heads 2 --encoder_ffn_dim 32 --decoder_ffn_dim 32 --vocab_size 300"
).split()
# Two steps, nothing saved on the way, validation and test on a few sentences.
SHORT_RUN = "--max_steps 2 --eval_steps 0 --save_steps 0 --save_minutes 0 --average_last_k 1".split()
SHORT_RUN += "--max_eval_samples 4 --max_test_samples 4 --use_cpu true".split()


def build_backend_installed() -> bool:
    """Whether this environment has the build backend pyproject.toml asks for (else pip builds in isolation, which
    downloads it: a fresh venv of Python 3.11 has an older setuptools)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, requires):
        try:
            if not requirement.specifier.contains(version(requirement.name), prereleases=True):
                return False
        except PackageNotFoundError:
            return False
    return True


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new venv with the wheel installed; returns its bin/ folder."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    for name in PACKAGE_FILES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(REPO_ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    build = [*pip, "wheel", "--no-deps", "-w", str(root / "wheel"), str(source)]
    if build_backend_installed():
        build[-4:-4] = ["--no-build-isolation", "--no-index"]  # offline, with this environment's setuptools
    subprocess.run(build, check=True, capture_output=True, timeout=300, cwd=root)
    (wheel,) = (root / "wheel").glob("vaswani_transformer-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    install = [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=300, cwd=root)
    site_packages = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")  # torch, transformers, ...
    return python.parent


@pytest.fixture()
def user(venv, tmp_path):
    """Run a command of the new venv from an empty folder, offline, without this checkout on any path."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VASWANI_DATA_DIR")}
    env.update(OFFLINE, PATH=f"{venv}{os.pathsep}{env['PATH']}", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["HF_HOME"] = str(tmp_path / "hf_home")

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    return run


def test_the_package_comes_from_the_wheel_and_the_presets_with_it(venv, user):
    """One process (each start imports torch): the module's file and the preset's path, both in the new venv."""
    code = (
        "import vaswani_transformer\n"
        "from vaswani_transformer.training.presets import resolve_config\n"
        "print(vaswani_transformer.__file__)\n"
        "print(resolve_config('multi30k_en_de_cpu'))"
    )
    found = user("python", "-c", code)
    assert found.returncode == 0, found.stderr
    module, preset = map(Path, found.stdout.split())
    assert module.is_relative_to(venv.parent) and preset.is_relative_to(venv.parent), found.stdout
    assert preset.name == "multi30k_en_de_cpu.yaml" and preset.read_text(encoding="utf-8").startswith("# Multi30k")


def test_without_data_the_preset_names_where_multi30k_comes_from(user, tmp_path):
    result = user("vaswani-train", "--config", "multi30k_en_de_cpu", "--output_dir", "run")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    (line,) = errors
    assert line.startswith("vaswani-train: error: data_dir not found: data/multi30k. ")  # the rule's last resort
    for needed in ("github.com/multi30k/dataset", "data/task1/raw", "--data_dir", "VASWANI_DATA_DIR"):
        assert needed in line


def test_a_two_step_run_writes_a_complete_model_card(user, tmp_path, multi30k_dir):
    data = tmp_path / "data" / "multi30k"  # found without --data_dir: ./data/multi30k
    data.mkdir(parents=True)
    for split, count in (("train", 48), ("val", 8), ("test_2016_flickr", 8)):
        for lang in ("en", "de"):
            lines = read_multi30k(multi30k_dir, split, lang, limit=count)
            (data / f"{split}.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = user("vaswani-train", "--config", "multi30k_en_de_cpu", "--output_dir", "run", *TINY_MODEL, *SHORT_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    card = (run / "README.md").read_text(encoding="utf-8")
    args = json.loads((run / "training_args.json").read_text())
    results = json.loads((run / "train_results.json").read_text())
    assert Path(args["data_dir"]) == Path("data/multi30k") and results["step"] == 2

    url = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert f"**Code:** [{url}]({url}) (version " in card  # the code, from the installed package's metadata
    assert "datasets:\n- bentrevett/multi30k\n" in card and "license: apache-2.0" in card  # Hub id of the data
    assert "non-commercial research and educational use only" in card and "## Licence and data terms" in card
    assert f"**Hardware.** {results['hardware']} (cpu),\n1 training process;" in card
    assert f"training time {results['elapsed_seconds'] / 60:.1f} minutes" in card
    assert "## Intended uses and limitations" in card
    assert "[`hyps_test_2016_flickr.de`](hyps_test_2016_flickr.de)" in card
    assert (run / "hyps_test_2016_flickr.de").read_text(encoding="utf-8").count("\n") == 4
    assert card.count('from_pretrained("run", trust_remote_code=True)') == 2  # the local card: the local path
    assert 'pipeline("translation", model="run", trust_remote_code=True)' in card
    assert "pip install vaswani_transformer" not in card and "vaswani_transformer[" not in card
    assert not re.search(r"\]\((?!https://)(?!hyps_|results_|training_args)", card)  # links: the web or uploads

    listed = user("vaswani-push-to-hub", "run", "--hub_model_id", "someone/tiny", "--dry_run")
    assert listed.returncode == 0, listed.stderr
    assert {"README.md", "hyps_test_2016_flickr.de", "training_args.json"} <= set(listed.stdout.split())
