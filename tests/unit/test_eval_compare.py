"""eval/compare.py: several evaluated models in one Table 9, from the rows their evaluations
wrote; the notes name what makes two models' cells incomparable."""
import csv
import re
from pathlib import Path

import pytest
from entry_points import load_script

from dali_pixmix.evaluation import cli
from dali_pixmix.evaluation.compare import compare_evaluations, default_name
from dali_pixmix.evaluation.report import row, write_rows

pytestmark = pytest.mark.unit

CROP = "pixmix:resize256-crop224"


def evaluated(folder: Path, clean_error, rms, c_rows, protocol_c=CROP, c_images=50):
    """An evaluation folder as eval/run_all.py leaves it (results/*.json)."""
    write_rows([row("clean", "imagenet_val", "top1_error", clean_error, 500, CROP),
                row("clean", "imagenet_val", "rms", rms, 500, CROP)], folder / "results",
               "clean")
    cells = [row("imagenet_c", "imagenet_c", "error", 50.0, c_images, protocol_c,
                 variant="fog", severity=s) for s in range(1, 6)]
    write_rows(cells + c_rows(protocol_c), folder / "results", "imagenet_c")
    return folder


def full_mce(protocol):
    return [row("imagenet_c", "imagenet_c", "mce", 70.04, 50, protocol, variant="mean")]


def partial(protocol):
    return [row("imagenet_c", "imagenet_c", "mce_partial", 64.96, 50, protocol,
                variant="partial: 1 of 15")]


def test_two_models_in_one_table_with_numbers_and_a_chart(tmp_path):
    a = evaluated(tmp_path / "baseline" / "eval", 23.04, 5.55, full_mce)
    b = evaluated(tmp_path / "pixmix" / "eval", 22.56, 3.61, partial, c_images=20)
    table, table_csv, chart = compare_evaluations([a, b], None, tmp_path / "cmp")
    text = table.read_text()
    assert "| baseline | 23.0 | 70.0 | - | - | - | - | 5.5 | - |" in text  # 5.55 -> 5.5 (float)
    assert "| pixmix | 22.6 | 65.0* | - |" in text and "| PixMix (paper) | 22.6 | 65.8 |" in text
    assert "* pixmix: C mCE over 1 of 15 (a partial set), not comparable to the paper." in text
    assert ("ImageNet-C: the models rest on different numbers of images (baseline 50, pixmix "
            "20); their cells are not comparable.") in text
    assert "clean: the models rest on" not in text  # same 500 images
    lines = list(csv.DictReader(table_csv.open()))
    assert [(r["model"], r["clean err"], r["C mCE"], r["R err"]) for r in lines] == [
        ("baseline", "23.0400", "70.0400", ""), ("pixmix", "22.5600", "64.9600", "")]
    assert chart.name == "table9.png" and chart.stat().st_size > 1000


def test_other_protocols_are_named(tmp_path):
    a = evaluated(tmp_path / "a", 23.0, 5.0, full_mce)
    b = evaluated(tmp_path / "b", 22.0, 4.0, full_mce, protocol_c="unresized")
    text = compare_evaluations([a, b], ["A", "B"], tmp_path / "cmp")[0].read_text()
    assert ("ImageNet-C: the models were evaluated under different protocols (A: "
            f"{CROP}; B: unresized); their cells are not comparable.") in text
    assert "clean: the models were evaluated under different protocols" not in text


def test_default_names_skip_the_conventional_eval_folder(tmp_path):
    assert default_name(tmp_path / "runs" / "pixmix" / "eval") == "pixmix"
    assert default_name(tmp_path / "results_pixmix") == "results_pixmix"


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"^error: .*/nowhere: no such folder \(give the --out folder"),
    ("empty", r"^error: .*/empty: no results/\*\.json in it; evaluate the model first"),
    ("names", r"^error: --names gives 1 name\(s\) for 2 folder\(s\)$"),
    ("twice", r"^error: two models are named same; tell them apart with --names$"),
    ("into_an_evaluation", r"^error: --out .*/good holds an evaluation \(results/\*\.json\), "
                           r"whose table9\.md the comparison would overwrite: pass another "
                           r"--out, e.g\. .*/comparison$"),
    ("mixed", r"^error: .*/mixed holds the results of 2 checkpoints \(a\.pt \(weights aaaa\), "
              r"b\.pt \(weights bbbb\)\), which one table would mix"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, case, pattern):
    good = evaluated(tmp_path / "good", 23.0, 5.0, full_mce)
    (good / "table9.md").write_text("the evaluation's own table\n")
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"  # rows of two checkpoints' weights (files copied together)
    write_rows([row("clean", "imagenet_val", "top1_error", 23.0, 500, CROP)], mixed / "results",
               "clean", {"checkpoint": "a.pt", "weights": "aaaa"})
    write_rows([row("imagenet_r", "imagenet_r", "top1_error", 60.0, 300, CROP)],
               mixed / "results", "imagenet_r", {"checkpoint": "b.pt", "weights": "bbbb"})
    args = {"missing": [good, tmp_path / "nowhere"], "empty": [good, tmp_path / "empty"],
            "names": [good, good, "--names", "one"],
            "twice": [good, good, "--names", "same", "same"],
            "into_an_evaluation": [good, good, "--names", "a", "b"],
            "mixed": [good, mixed]}[case]
    out = good if case == "into_an_evaluation" else tmp_path / "cmp"
    argv = [*map(str, args), "--out", str(out)]
    assert cli.run_cli(load_script("eval/compare.py").main, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.match(pattern, lines[0]), lines
    assert (good / "table9.md").read_text() == "the evaluation's own table\n"


def test_the_protocols_note_names_each_part_once():
    """Rows share parts of their protocols (the input transform of every CIFAR task): the note
    lists each ';'-separated part once, so it stays readable."""
    from dali_pixmix.evaluation.report import protocols_note

    note = protocols_note(["cifar:32px;pgd:eps=2/255", "cifar:32px", "ood-positive;cifar:32px"])
    assert note == "Protocols: cifar:32px; ood-positive; pgd:eps=2/255"
    assert protocols_note([]) == ""
