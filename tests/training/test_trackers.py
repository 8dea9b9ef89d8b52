"""`--report_to`: a tracker whose package is missing stops the run at its start with one line (accelerate alone would
drop the tracker silently and train without curves)."""

import accelerate.tracking
import pytest
from accelerate.utils import LoggerType

from vaswani_transformer.command_line import run
from vaswani_transformer.training.trackers import tracker_names
from vaswani_transformer.training.train import main as train_main


def test_names_become_accelerates_log_with(monkeypatch):
    monkeypatch.setattr(accelerate.tracking, "_available_trackers", [LoggerType.TENSORBOARD, LoggerType.TRACKIO])
    assert tracker_names("none") is None and tracker_names("") is None
    assert tracker_names("all") == ["all"]  # accelerate's meaning: whatever is installed
    assert tracker_names("tensorboard") == ["tensorboard"]
    assert tracker_names("trackio, tensorboard") == ["trackio", "tensorboard"]
    with pytest.raises(ValueError, match=r"unknown tracker 'tensorbord' \(choose among none, all, .*wandb\)"):
        tracker_names("tensorbord")


@pytest.mark.parametrize(
    ("tracker", "package"), [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("comet_ml", "comet-ml")]
)
def test_a_missing_package_is_named_with_its_pip_command(tracker, package, monkeypatch):
    monkeypatch.setattr(accelerate.tracking, "_available_trackers", [LoggerType.TRACKIO])
    with pytest.raises(
        ImportError, match=f"^--report_to {tracker} needs the {package} package, .*: pip install {package} "
    ):
        tracker_names(f"trackio,{tracker}")


def test_the_run_stops_before_reading_data(monkeypatch, tmp_path, capsys):
    """The data folder does not exist either: the tracker's error comes first, and nothing is written."""
    monkeypatch.setattr(accelerate.tracking, "_available_trackers", [])
    out = tmp_path / "run"
    argv = ["--config", "multi30k_en_de_cpu", "--data_dir", str(tmp_path / "missing"), "--output_dir", str(out)]
    argv += ["--use_cpu", "true", "--report_to", "tensorboard"]
    assert run(train_main, argv, prog="vaswani-train") == 2
    (line,) = capsys.readouterr().err.splitlines()[-1:]
    assert line.startswith("vaswani-train: error: --report_to tensorboard needs the tensorboard package")
    assert "pip install tensorboard" in line and not (out.exists() and any(out.iterdir()))
