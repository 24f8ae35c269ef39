"""Training curves: the figure holds what metrics.jsonl holds (validation gaps stay gaps), and
tools/plot_training.py overlays runs or says in one line what is wrong."""
import json
import re

import pytest
from entry_points import load_script

from dali_pixmix.evaluation import cli
from dali_pixmix.training.curves import curves_figure

pytestmark = pytest.mark.unit


def lines(scale=1.0, validate_every=2):
    out = []
    for epoch in range(1, 5):
        line = {"epoch": epoch, "step": 10 * epoch, "loss": scale * (3.0 - 0.5 * epoch),
                "lr": 0.1 / epoch}
        if epoch % validate_every == 0:
            line["val"] = {"top1": 20.0 * epoch, "top5": 25.0 * epoch, "loss": 2.0 / epoch,
                           "rms": 30.0 / epoch, "ece15": 20.0 / epoch, "chance_top1": 10.0}
        out.append(line)
    return out


def plotted(ax):
    return {line.get_label(): [tuple(xy) for xy in line.get_xydata()] for line in ax.lines}


def test_one_run_draws_each_metric_at_its_epochs():
    fig, plt = curves_figure({"pixmix": lines()}, "t")
    loss, accuracy, calibration, lr = fig.axes
    assert plotted(loss)["train"] == [(1, 2.5), (2, 2.0), (3, 1.5), (4, 1.0)]
    assert plotted(loss)["val"] == [(2, 1.0), (4, 0.5)]  # validated every 2nd epoch: no zeros
    assert plotted(accuracy)["top-1"] == [(2, 40.0), (4, 80.0)]
    assert plotted(calibration)["ECE"] == [(2, 10.0), (4, 5.0)]
    assert plotted(lr)["lr"][0] == (1, 0.1)
    assert accuracy.lines[-1].get_ydata()[0] == 10.0  # the chance level
    plt.close(fig)


def test_runs_are_overlaid_with_their_names(tmp_path):
    for name, scale in (("baseline", 1.0), ("pixmix", 1.2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines(scale)))
    out = tmp_path / "curves.png"
    argv = [str(tmp_path / "baseline"), str(tmp_path / "pixmix"), "--out", str(out)]
    assert cli.run_cli(load_script("tools/plot_training.py").main, argv) == 0
    assert out.stat().st_size > 1000
    fig, plt = curves_figure({"baseline": lines(), "pixmix": lines(1.2)}, "t")
    assert {"baseline: train", "pixmix: train"} <= set(plotted(fig.axes[0]))
    plt.close(fig)


@pytest.mark.parametrize("setup, extra, pattern", [
    ("none", [], r"^error: .*/run/metrics\.jsonl: not found; give a training output folder"),
    ("empty", [], r"^error: .*/run/metrics\.jsonl holds no epoch yet$"),
    ("ok", ["--names", "a", "b"], r"^error: --names gives 2 name\(s\) for 1 run\(s\)$"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, setup, extra, pattern):
    run = tmp_path / "run"
    run.mkdir()
    if setup != "none":
        (run / "metrics.jsonl").write_text("" if setup == "empty" else
                                          json.dumps(lines()[0]) + "\n")
    argv = [str(run), *extra, "--out", str(tmp_path / "c.png")]
    assert cli.run_cli(load_script("tools/plot_training.py").main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(pattern, err[0]), err
