"""The oldest supported transformers: one `ImportError` below it, one version in pyproject.toml and in the model's
code, and the CI's floor job (`.ci/floor_version_check.py`) kept working under the current release."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import transformers
from conftest import REPO_ROOT

from vaswani_transformer import configuration_vaswani_transformer
from vaswani_transformer.configuration_vaswani_transformer import MIN_TRANSFORMERS_VERSION, require_transformers


FLOOR_SCRIPT = REPO_ROOT / ".ci" / "floor_version_check.py"


def import_configuration_file(monkeypatch, name: str):
    """Execute `configuration_vaswani_transformer.py` as a new module `name`, as transformers loads remote code."""
    spec = importlib.util.spec_from_file_location(name, configuration_vaswani_transformer.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("installed", ["5.3.0", "5.0.0rc1", "4.57.6"])
def test_import_error_names_installed_and_required_versions(monkeypatch, installed):
    monkeypatch.setattr(transformers, "__version__", installed)
    with pytest.raises(ImportError) as error:
        import_configuration_file(monkeypatch, "configuration_under_old_transformers")
    assert str(error.value) == (
        f"This Vaswani Transformer model needs transformers >= 5.4, but transformers {installed} is installed: "
        "pip install 'transformers>=5.4,<6'"
    )


@pytest.mark.parametrize("installed", ["5.4.0", "5.19.0", "5.24.0.dev0", "6.0.0", "unknown"])
def test_supported_versions_pass_the_guard(monkeypatch, installed):
    require_transformers(installed)
    monkeypatch.setattr(transformers, "__version__", installed)
    assert import_configuration_file(monkeypatch, "configuration_under_new_transformers").VaswaniTransformerConfig


def test_pyproject_lower_bound_is_the_guard_s_version():
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    (requirement,) = re.findall(r'"transformers([^"]*)"', pyproject)
    assert requirement == ">={}.{},<6".format(*MIN_TRANSFORMERS_VERSION)


def run_floor_script(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_TOKEN")}
    env.update(HF_HOME=str(cwd / "hf_home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, str(FLOOR_SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # the floor job's two scripts, three fresh interpreters (about 18 s)
def test_floor_check_passes_under_the_current_release_and_fails_on_a_difference(tmp_path):
    """The CI's floor job, both steps under the installed transformers; then with one expected id changed."""
    saved = run_floor_script("save", str(tmp_path), cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr[-3000:]
    checked = run_floor_script("check", str(tmp_path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    version = transformers.__version__
    passed = f"floor check PASSED: transformers {version} vs {version}: same greedy, beam-4, pipeline and attention"
    assert checked.stdout.startswith(passed)
    expected_file = tmp_path / "expected.json"
    expected = json.loads(expected_file.read_text())
    translations = [record["translation_text"] for record in expected["outputs"]["pipeline"]]
    assert translations[0] == "Ein Mann fährt Fahrrad." and translations[3:5] == ["", ""]  # the tiny model learnt
    expected["outputs"]["beam4"][0][1] += 1
    expected_file.write_text(json.dumps(expected))
    failed = run_floor_script("check", str(tmp_path), cwd=tmp_path)
    assert failed.returncode == 1 and failed.stdout.startswith(f"floor check FAILED: transformers {version}")
    assert "beam4: expected" in failed.stdout and "greedy" not in failed.stdout


def test_floor_version_is_the_guard_s(tmp_path):
    printed = run_floor_script("floor-version", cwd=tmp_path)
    assert printed.stdout.strip() == "{}.{}.0".format(*MIN_TRANSFORMERS_VERSION)
