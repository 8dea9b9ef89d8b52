"""The training script's arguments: YAML presets, command-line precedence, flags derived from the config."""

from __future__ import annotations

import dataclasses

import pytest

from vaswani_transformer import VaswaniTransformerConfig
from vaswani_transformer.training.arguments import (
    ARCHITECTURE_FIELDS,
    DataArguments,
    ModelArguments,
    TrainingArguments,
    architecture_overrides,
    parse_arguments,
)
from vaswani_transformer.training.data import load_training_splits
from vaswani_transformer.training.initialization import build_model_config
from vaswani_transformer.training.presets import preset_names
from vaswani_transformer.training.train import main as train_main


@pytest.mark.parametrize("config", preset_names())
def test_presets_parse(config):
    model_args, data_args, train_args = parse_arguments(["--config", config])  # by name: the installed preset
    assert train_args.output_dir and train_args.num_beams == 4 and train_args.length_penalty == 0.6
    if config.startswith("wmt14"):
        assert (train_args.warmup_steps, train_args.target_tokens_per_step) == (4000, 25000)  # §5.3, §5.1
        assert train_args.max_steps == (100_000 if model_args.model == "base" else 300_000)  # Table 3
    assert train_args.cpu_kernels == ("_cpu" in config)  # the CPU presets' speed options


def test_yaml_gives_defaults_and_the_command_line_wins(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("output_dir: from_yaml\nmax_tokens: 1234\nd_model: 64\n")
    model_args, _, train_args = parse_arguments(["--config", str(config), "--max_tokens", "99"])
    assert (train_args.output_dir, train_args.max_tokens, model_args.d_model) == ("from_yaml", 99, 64)
    config.write_text("output_dir: x\nnot_an_argument: 1\n")
    with pytest.raises(ValueError, match="not_an_argument"):
        parse_arguments(["--config", str(config)])
    with pytest.raises(ValueError, match="needs checkpoints"):
        parse_arguments(["--output_dir", "x", "--average_last_k", "5"])
    from vaswani_transformer.training.hub import check_hub_access

    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no_token_here"))
    with pytest.raises(ValueError, match="token"):
        check_hub_access(TrainingArguments(output_dir="x", push_to_hub=True, hub_model_id="a/b"))


def test_training_args_record_the_data_folder_actually_read(tmp_path, monkeypatch):
    folder = tmp_path / "multi30k"
    folder.mkdir()
    for lang, text in (("en", "a dog\n"), ("de", "ein Hund\n")):
        (folder / f"train.{lang}").write_text(text)
    monkeypatch.setenv("VASWANI_DATA_DIR", str(tmp_path))
    args = DataArguments()
    assert load_training_splits(args)["train"]["translation"] == [{"en": "a dog", "de": "ein Hund"}]
    assert args.data_dir == str(folder)
    (tmp_path / "train.jsonl").write_text('{"translation": {"en": "a cat", "de": "eine Katze"}}\n')
    args = DataArguments(train_file=str(tmp_path / "train.jsonl"))
    assert len(load_training_splits(args)["train"]) == 1 and args.data_dir is None


def test_every_architecture_field_of_the_config_is_a_flag_with_its_help():
    config_fields = {f.name for f in dataclasses.fields(VaswaniTransformerConfig)}
    flags = {f.name: f for f in dataclasses.fields(ModelArguments)}
    assert set(ARCHITECTURE_FIELDS) <= config_fields and set(ARCHITECTURE_FIELDS) <= set(flags)
    assert {"d_model", "encoder_layers", "encoder_ffn_dim", "dropout", "label_smoothing"} <= set(ARCHITECTURE_FIELDS)
    assert not {"vocab_size", "pad_token_id", "use_cache"} & set(ARCHITECTURE_FIELDS)
    for name in ARCHITECTURE_FIELDS:
        assert flags[name].default is None, name  # unset: the preset decides
        assert flags[name].metadata["help"], f"{name} has no help text in the config docstring"
    assert flags["d_model"].metadata["help"].startswith("d_model:")  # the paper's symbol first
    assert flags["scale_embedding"].metadata["help"].startswith("sqrt(d_model):")


def test_architecture_flags_reach_the_config_over_the_preset(small_tokenizer):
    argv = ["--output_dir", "x", "--model", "big", "--encoder_layers", "2", "--scale_embedding", "false"]
    argv += ["--dropout", "0.2", "--layer_norm_position", "pre"]
    model_args, _, _ = parse_arguments(argv)
    assert architecture_overrides(model_args) == {
        "encoder_layers": 2, "scale_embedding": False, "dropout": 0.2, "layer_norm_position": "pre",
    }  # fmt: skip
    config = build_model_config(model_args, small_tokenizer)
    big = VaswaniTransformerConfig.big()
    assert (config.d_model, config.encoder_ffn_dim, config.decoder_layers) == (1024, 4096, 6) == (
        big.d_model, big.encoder_ffn_dim, big.decoder_layers,
    )  # fmt: skip
    assert (config.encoder_layers, config.scale_embedding, config.dropout) == (2, False, 0.2)
    assert config.vocab_size == len(small_tokenizer) and config.pad_token_id == small_tokenizer.pad_token_id
    with pytest.raises(ValueError, match="divisible"):
        build_model_config(parse_arguments(["--output_dir", "x", "--d_model", "100"])[0], small_tokenizer)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("output_dir: x\nmax_tokens: [1,\n", r"run\.yaml: invalid YAML at line 3, column 1"),
        ("output_dir: x\nmax_steps: 20.7\n", r"run\.yaml: max_steps: expected a whole number, got 20\.7"),
        ("output_dir: x\nmixed_precision: no\n", r"run\.yaml: mixed_precision: expected a string, got False \(YAML"),
        ("output_dir: x\nuse_cpu: 1\n", r"run\.yaml: use_cpu: expected true or false, got 1"),
        ("- output_dir\n", r"run\.yaml: expected a mapping"),
        ("output_dir: x\nattn_implementation: flash\n", r"run\.yaml: attn_implementation: expected one of \['sdpa', "),
        ("output_dir: x\nlength_penalty_type: fairseq\n", r"run\.yaml: length_penalty_type: expected one of \["),
    ],
    ids=["syntax", "float-for-int", "yaml-no", "int-for-bool", "list", "attn-choice", "penalty-choice"],
)
def test_case8_config_file_errors_name_the_file_and_key(tmp_path, yaml_text, expected):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ValueError, match=expected):
        parse_arguments(["--config", str(config)])


def test_case8_config_flag_without_a_value_and_typed_values_that_pass(tmp_path):
    for argv in (["--config"], ["--config", "--output_dir", "x"], ["--config="]):
        with pytest.raises(ValueError, match="--config needs a preset name or the path of a YAML file"):
            parse_arguments(argv)
    with pytest.raises(ValueError, match="--config is given 2 times; give one YAML file"):
        parse_arguments(["--config", "a.yaml", "--output_dir", "x", "--config=b.yaml"])
    with pytest.raises(FileNotFoundError, match=f"config file not found: {tmp_path / 'missing.yaml'}"):
        parse_arguments([f"--config={tmp_path / 'missing.yaml'}"])
    config = tmp_path / "run.yaml"
    config.write_text('output_dir: x\nmixed_precision: "no"\nnum_train_epochs: 3\ndropout: 1\nmax_train_minutes: 2\n')
    model_args, _, train_args = parse_arguments([f"--config={config}"])
    assert (train_args.mixed_precision, train_args.num_train_epochs, model_args.dropout) == ("no", 3.0, 1.0)
    assert isinstance(train_args.num_train_epochs, float) and isinstance(train_args.max_train_minutes, float)


def test_case8_command_line_ints_reject_floats_and_user_errors_are_one_line_exit_2(tmp_path, capsys):
    from vaswani_transformer import command_line as cli

    with pytest.raises(SystemExit) as exit_info:  # argparse: "invalid int value", status 2
        parse_arguments(["--output_dir", "x", "--max_steps", "20.7"])
    assert exit_info.value.code == 2 and "invalid int value: '20.7'" in capsys.readouterr().err
    config = tmp_path / "run.yaml"
    config.write_text("output_dir: x\nmax_steps: 20.7\n")
    assert cli.run(train_main, ["--config", str(config)], "vaswani-train") == 2
    expected = f"{config}: max_steps: expected a whole number, got 20.7 (run with --debug for the traceback)"
    assert capsys.readouterr().err == f"vaswani-train: error: {expected}\n"
    with pytest.raises(ValueError, match="max_steps"):  # --debug shows the traceback
        cli.run(train_main, ["--config", str(config), "--debug"], "vaswani-train")

    def bug(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # not a user error: the traceback stays
        cli.run(bug, [])


@pytest.mark.parametrize("value", ["0", "-8"])
def test_pad_to_multiple_of_must_be_positive(value):
    with pytest.raises(ValueError, match=f"--pad_to_multiple_of must be positive .*got {value}"):
        parse_arguments(["--output_dir", "x", "--pad_to_multiple_of", value])
    assert parse_arguments(["--output_dir", "x"])[2].pad_to_multiple_of == 8


def test_every_command_spells_output_dir_and_hub_model_id_as_the_trainer(caplog):
    """vaswani-push-to-hub, vaswani-model-card and vaswani-average-checkpoints take transformers' --output_dir and
    --hub_model_id; their older spellings still work, with a warning."""
    from vaswani_transformer.command_line import parse_arguments as parse_command
    from vaswani_transformer.training import cli

    new = ["--output_dir", "runs/x", "--hub_model_id", "org/name"]
    for arguments_class in (cli.PushToHubArguments, cli.ModelCardArguments):
        assert parse_command(arguments_class, new).hub_model_id == "org/name"
        old = parse_command(arguments_class, ["runs/x", "--repo_id", "org/name"], positional=("output_dir",))
        assert (old.output_dir, old.hub_model_id) == ("runs/x", "org/name")
    average = ["--inputs", "a", "--output", "out"]
    assert parse_command(cli.AverageCheckpointsArguments, average).output_dir == "out"
    with caplog.at_level("WARNING", logger="vaswani_transformer.training.cli"):
        cli._warn_deprecated(["x", "--repo_id=org/name", "--dry_run"], {"--repo_id": "--hub_model_id"})
    assert caplog.messages == ["--repo_id is deprecated: use --hub_model_id"]


def test_fixed_step_presets_are_the_45_minute_ones_stopped_by_steps():
    """multi30k_*_cpu_steps: the same recipe as the 45-minute presets, stopped after a fixed number of steps (what
    the 45-minute runs reached) instead of by the clock, so that a score can be reproduced by steps."""
    from vaswani_transformer.training.arguments import read_config_file
    from vaswani_transformer.training.presets import resolve_config

    steps = {"en_de": 8000, "en_fr": 10000}  # what the 45-minute runs reached (docs/experiments)
    for pair in ("en_de", "en_fr"):
        timed = read_config_file(resolve_config(f"multi30k_{pair}_cpu"))
        by_steps = read_config_file(resolve_config(f"multi30k_{pair}_cpu_steps"))
        assert by_steps.pop("max_train_minutes") == 0 and timed.pop("max_train_minutes") == 45
        assert by_steps.pop("max_steps") == steps[pair] and "max_steps" not in timed
        assert by_steps.pop("save_steps") == 500 and timed.pop("save_minutes") == 3
        assert by_steps.pop("output_dir") == timed.pop("output_dir") + "_steps"
        assert by_steps == timed
        model_args, _, train_args = parse_arguments(["--config", f"multi30k_{pair}_cpu_steps"])
        assert (train_args.max_steps, train_args.max_train_minutes, train_args.save_minutes) == (steps[pair], 0.0, 0.0)


def test_help_lists_every_flag(capsys):
    """argparse formats every help text with %: a stray % in one breaks --help for all flags."""
    with pytest.raises(SystemExit) as exit_info:
        parse_arguments(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    for name in ("model_name_or_path", "source_column", "truncate_long_pairs", "target_tokens_per_step"):
        assert f"--{name}" in shown
