"""The presets travel with the package: found by name or by path, and a wrong name lists the names."""

import shutil

import pytest
import yaml

from vaswani_transformer.training.arguments import parse_arguments, read_config_file
from vaswani_transformer.training.presets import (
    PRESETS_DIR,
    accelerate_config_names,
    preset_names,
    resolve_config,
)
from vaswani_transformer.training.presets.__main__ import main as presets_main


def test_presets_live_in_the_package_once():
    assert {"multi30k_en_de_cpu", "multi30k_en_fr_cpu", "wmt14_en_de_base"} <= set(preset_names())
    assert {"accelerate_cpu_2proc", "accelerate_fsdp2"} <= set(accelerate_config_names())
    assert PRESETS_DIR.parent.name == "training" and PRESETS_DIR.parent.parent.name == "vaswani_transformer"


def test_a_preset_by_name_and_by_path_read_the_same_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the checkout: the name resolves inside the package
    by_name = read_config_file("multi30k_en_de_cpu")
    assert by_name == read_config_file("multi30k_en_de_cpu.yaml")
    copy = tmp_path / "mine.yaml"
    shutil.copy(PRESETS_DIR / "multi30k_en_de_cpu.yaml", copy)
    assert read_config_file(copy) == by_name == yaml.safe_load((PRESETS_DIR / "multi30k_en_de_cpu.yaml").read_text())
    _, data_args, train_args = parse_arguments(["--config", "multi30k_en_de_cpu", "--output_dir", "x"])
    assert (data_args.source_lang, data_args.target_lang, train_args.output_dir) == ("en", "de", "x")


def test_a_file_in_the_working_directory_wins_over_the_preset_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "multi30k_en_de_cpu.yaml").write_text("output_dir: mine\n")
    assert resolve_config("multi30k_en_de_cpu.yaml").resolve() == tmp_path / "multi30k_en_de_cpu.yaml"
    assert resolve_config("multi30k_en_de_cpu") == PRESETS_DIR / "multi30k_en_de_cpu.yaml"  # the name is the preset


@pytest.mark.parametrize("value", ["multi30k_en_xx_cpu", "configs/multi30k_en_de_cpu.yaml"])
def test_an_unknown_name_lists_the_presets(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"config file not found: {value} .*multi30k_en_de_cpu, ") as error:
        parse_arguments(["--config", value])
    assert "\n" not in str(error.value) and "accelerate_" not in str(error.value)


def test_an_accelerate_config_is_sent_to_accelerate_launch():
    with pytest.raises(FileNotFoundError, match="accelerate launch --config_file .*accelerate_fsdp2.yaml"):
        resolve_config("accelerate_fsdp2")


def test_the_listing_tool_prints_paths(capsys):
    assert presets_main(["accelerate_fsdp2"]) == 0
    assert capsys.readouterr().out.strip() == str(PRESETS_DIR / "accelerate_fsdp2.yaml")
    assert presets_main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(preset_names()) + len(accelerate_config_names())
    assert all(line.split("\t")[1].endswith(line.split("\t")[0] + ".yaml") for line in lines)
    with pytest.raises(FileNotFoundError, match="no preset named nope; presets: .*wmt14_en_de_base"):
        presets_main(["nope"])
