"""The experiment trackers of `--report_to`, checked before a run starts: accelerate drops a tracker whose package is
missing without a word (`accelerate.tracking.filter_trackers`), so a run asked for curves would train without any.

    vaswani-train --config wmt14_en_de_base --report_to tensorboard   # needs `pip install tensorboard`
    vaswani-train --config multi30k_en_de_cpu --report_to trackio,tensorboard

`tracker_names` turns the flag into accelerate's `log_with` and raises one line naming the missing package and its
pip command. The names are accelerate's (`accelerate.tracking.LOGGER_TYPE_TO_CLASS`: tensorboard, wandb, trackio,
mlflow, comet_ml, aim, clearml, dvclive, swanlab); "all" keeps accelerate's meaning, every tracker installed.
"""

from __future__ import annotations


__all__ = ["PIP_PACKAGES", "tracker_names"]

# The pip package each tracker needs, where its name differs from the tracker's (tensorboardX also serves tensorboard).
PIP_PACKAGES = {"comet_ml": "comet-ml"}


def tracker_names(report_to: str) -> list[str] | None:
    """accelerate's `log_with` for `--report_to`: None for "none", ["all"], or the comma-separated tracker names.

    Raises:
        ValueError: an unknown tracker name (lists the known ones).
        ImportError: a named tracker whose package is not installed (names it and the `pip install` command).
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    names = [name.strip() for name in report_to.split(",") if name.strip()]
    if names in ([], ["none"]):
        return None
    if "all" in names:
        return ["all"]
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            known = ", ".join(["none", "all", *sorted(LOGGER_TYPE_TO_CLASS)])
            raise ValueError(f"--report_to {report_to}: unknown tracker {name!r} (choose among {known})")
    available = {str(tracker) for tracker in get_available_trackers()}
    for name in names:
        if name not in available:
            package = PIP_PACKAGES.get(name, name)
            raise ImportError(
                f"--report_to {name} needs the {package} package, which is not installed: pip install {package} "
                "(or --report_to none)"
            )
    return names
