"""Result rows, the Table 9 form and the plots."""
import csv
import json
from dataclasses import replace

import numpy as np
import pytest

import dali_pixmix
from dali_pixmix.evaluation import report
from dali_pixmix.metrics.calibration import reliability_bins
from dali_pixmix.provenance import provenance

pytestmark = pytest.mark.unit

PROTO = "pixmix:resize256-crop224"


def sample_rows():
    rows = [report.row("clean", "imagenet_val", "top1_error", 22.61, 50000, "resize256-crop224"),
            report.row("clean", "imagenet_val", "rms", 3.64, 50000, "resize256-crop224"),
            report.row("imagenet_c", "imagenet_c", "mce", 65.84, 750000, PROTO, variant="mean"),
            report.row("imagenet_c", "imagenet_c", "rms", 6.3, 750000, PROTO, variant="mean"),
            report.row("imagenet_c", "imagenet_c", "error", 40.0, 50000, PROTO,
                       variant="fog", severity=3),
            report.row("imagenet_p", "imagenet_p", "mfr", 51.06, 100, "unresized", variant="mean"),
            report.row("ood", "textures", "auroc", 99.0, 100, "msp", variant="msp"),
            report.row("ood", "mean", "auroc", 85.71, 100, "msp", variant="msp"),
            report.row("ood", "mean", "auroc", 90.0, 100, "energy", variant="energy")]
    return rows


def test_json_csv_round_trip(tmp_path):
    rows = sample_rows()
    json_path, csv_path = report.write_rows(rows, tmp_path, "results")
    read = report.read_rows(json_path)
    assert [replace(r, software="") for r in read] == rows
    with csv_path.open() as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == report.FIELDS and len(table) == len(rows)
    assert table[4]["severity"] == "3" and table[0]["severity"] == ""
    assert json.loads(json_path.read_text())[0]["protocol"] == "resize256-crop224"
    (tmp_path / "bad.json").write_text('[{"task": "clean"}]')
    with pytest.raises(ValueError, match="not a list of result rows"):
        report.read_rows(tmp_path / "bad.json")


def test_rows_record_the_software_and_old_files_still_read(tmp_path):
    json_path, csv_path = report.write_rows(sample_rows(), tmp_path, "results")
    info = provenance()
    for stamp in [r.software for r in report.read_rows(json_path)] + \
            [line["software"] for line in csv.DictReader(csv_path.open())]:
        assert f"git={info['git_revision']}" in stamp
        for library in ("python", "torch", "torchvision", "dali", "numpy"):
            assert f"{library}={info[library]}" in stamp
    assert f"dali-pixmix={dali_pixmix.__version__}" in stamp
    # a results file written before rows carried the software field
    old = [{k: v for k, v in item.items() if k != "software"}
           for item in json.loads(json_path.read_text())]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert [r.software for r in report.read_rows(tmp_path / "old.json")] == [""] * len(old)
    # a row that already says which software made it keeps its stamp
    kept = replace(sample_rows()[0], software="dali-pixmix=0.0.9 git=abc")
    path, _ = report.write_rows([kept], tmp_path, "kept")
    assert report.read_rows(path) == [kept]


def test_table9_form_and_cells():
    md = report.table9_markdown(sample_rows(), name="my model")
    lines = md.splitlines()
    assert lines[0] == ("| method | clean err | C mCE | C-bar err | R err | P mFR | P mT5D | "
                        "RMS clean | RMS C | RMS C-bar | RMS R | AUROC | AUPR |")
    assert lines[4] == ("| PixMix (paper) | 22.6 | 65.8 | 44.3 | 60.1 | 51.1 | 69.1 | 3.6 | 6.3 | "
                        "5.8 | 11.0 | 85.7 | 64.1 |")
    # per-dataset OOD rows and non-MSP scores do not leak into the table; P mFR is filled
    assert lines[5] == ("| my model | 22.6 | 65.8 | - | - | 51.1 | - | 3.6 | 6.3 | - | - | "
                        "85.7 | - |")


def test_partial_corruption_summaries_are_shown_and_starred():
    """A partial ImageNet-C / C-bar still fills its columns, starred, and the note says over
    which part; a full-set summary wins over a partial one."""
    c = "partial: 3 of 15 corruptions"
    rows = [report.row("imagenet_c", "imagenet_c", "mce_partial", 70.0, 1000, PROTO, variant=c),
            report.row("imagenet_c", "imagenet_c", "rms", 9.0, 1000, PROTO, variant=c),
            report.row("imagenet_cbar", "imagenet_cbar", "mean_error", 50.0, 900, PROTO,
                       variant="partial: 9 of 10 corruptions")]
    md = report.table9_markdown(rows)
    assert "| this model | - | 70.0* | 50.0* | - | - | - | - | 9.0* | - | - | - | - |" in md
    assert ("* this model: C mCE, RMS C over 3 of 15 corruptions; C-bar err over 9 of 10 "
            "corruptions (a partial set), not comparable to the paper.") in md
    full = rows + [report.row("imagenet_c", "imagenet_c", "rms", 8.0, 5000, PROTO,
                              variant="mean")]
    assert report.table9_values(full)[7] == "8.0"  # RMS C: the full-set summary
    assert report.table9_numbers(full)["C mCE"] == 70.0


def test_plots_written(tmp_path):
    rows = [report.row(t, t, "rms", 5.0 + s, 10, PROTO, variant=c, severity=s)
            for t in ("imagenet_c", "imagenet_cbar") for c in ("a", "b") for s in range(1, 6)]
    rows += [report.row("imagenet_c", "imagenet_c", "ce", v, 10, PROTO, variant=c)
             for c, v in (("fog", 60.0), ("snow", 80.0))]
    assert report.plot_calibration_vs_severity(rows, tmp_path / "sev.png").stat().st_size > 1000
    assert report.plot_corruption_errors(rows, tmp_path / "ce.png").stat().st_size > 1000
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.1, 1, 500)
    bins = reliability_bins(conf, rng.uniform(size=500) < conf)
    assert report.plot_reliability(bins, tmp_path / "rel.png").stat().st_size > 1000
    assert report.plot_corruption_errors(rows[:1], tmp_path / "none.png") is None


def test_ce_table_form():
    rows = [report.row("imagenet_c", "imagenet_c", "ce", 61.4, 10, PROTO, variant="fog"),
            report.row("imagenet_c", "imagenet_c", "ce", 70.6, 10, PROTO, variant="gaussian_noise"),
            report.row("clean", "imagenet_val", "top1_error", 22.6, 10, "resize256-crop224")]
    header, _, line = report.ce_table_markdown(rows).splitlines()
    assert header.split(" | ")[3:6] == ["Gauss", "Shot", "Impulse"]
    cells = line.strip("| ").split(" | ")
    assert cells[:4] == ["this model", "22.6", "-", "71"] and cells[3 + 9] == "61"
    assert len(cells) == 18


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legend_clear_of_bars(fig) -> None:
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches]
    assert bars and not any(_overlaps(legend, bar) for bar in bars)


def test_calibration_curve_averages_the_15_corruptions_as_table9():
    """Extras (speckle_noise, ...) are not in Table 9's "RMS C"; they stay off the curve."""
    from dali_pixmix.metrics.corruption import EXTRA_CORRUPTIONS, TEST_CORRUPTIONS

    rows = [report.row("imagenet_c", "imagenet_c", "rms", 10.0 + s, 50, PROTO, variant=c,
                       severity=s) for c in TEST_CORRUPTIONS for s in range(1, 6)]
    rows += [report.row("imagenet_c", "imagenet_c", "rms", 90.0, 50, PROTO, variant=c,
                        severity=s) for c in EXTRA_CORRUPTIONS for s in range(1, 6)]
    fig = report.calibration_severity_figure(rows)
    (line,) = fig.axes[0].lines
    np.testing.assert_allclose(line.get_ydata(), [11, 12, 13, 14, 15])
    assert any(PROTO in t.get_text() and "50 images" in t.get_text() for t in fig.texts)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "ImageNet-C (15 corruptions)"]


def test_the_calibration_legend_counts_the_corruptions_evaluated():
    """A 5-corruption run (the demo's generated set) is not labelled with the full 15."""
    five = ("gaussian_noise", "defocus_blur", "contrast", "pixelate", "jpeg_compression")
    rows = [report.row("imagenet_c", "imagenet_c", "rms", 10.0, 50, PROTO, variant=c,
                       severity=s) for c in five for s in range(1, 6)]
    rows += [report.row("imagenet_cbar", "imagenet_cbar", "rms", 9.0, 50, PROTO, variant="blue",
                        severity=s) for s in range(1, 6)]
    fig = report.calibration_severity_figure(rows)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "ImageNet-C (5 corruptions)", "ImageNet-C-bar (1 corruption)"]


def test_legends_leave_the_bars_visible_and_plots_name_the_protocol():
    ce = [report.row("imagenet_c", "imagenet_c", "ce", v, 250, PROTO, variant=c)
          for c, v in (("gaussian_noise", 80.0), ("fog", 60.0), ("speckle_noise", 70.0))]
    fig = report.corruption_errors_figure(ce)
    _legend_clear_of_bars(fig)
    assert any(PROTO in t.get_text() for t in fig.texts)
    # a confident, accurate low-confidence bin sits where a top-left legend would cover it
    bins = reliability_bins(np.r_[np.full(20, 0.05), np.full(20, 0.95)], np.ones(40, bool))
    fig = report.reliability_figure(bins, protocol="resize256-crop224")
    _legend_clear_of_bars(fig)
    assert any("resize256-crop224" in t.get_text() and "40 images" in t.get_text()
               for t in fig.texts)


def test_table9_says_what_this_model_was_evaluated_on():
    rows = [report.row("clean", "imagenet_val", "top1_error", 3.0, 200, "resize72-crop64"),
            report.row("imagenet_c", "imagenet_c", "error", 40.0, 50, PROTO, variant="fog",
                       severity=3)]
    md = report.table9_markdown(rows, name="demo", num_classes=10)
    assert ("demo was evaluated on 200 ImageNet val images, 50 images per ImageNet-C cell, "
            "a 10-class model; the paper's rows use the full sets") in md
    assert "not comparable" in md
    paper_sets = [report.row("ood", name, "auroc", 80.0, 100, "msp", variant="msp")
                  for name in ("Gaussian", "rademacher", "blobs", "svhn", "lsun", "places")]
    full = report.table9_markdown(sample_rows() + paper_sets, num_classes=1000)
    assert "50,000 ImageNet val images" in full and "not comparable" not in full
    assert ("this model: AUROC/AUPR are the mean over 7 anomaly sets (textures, Gaussian, "
            "rademacher, blobs, svhn, lsun, places), the paper's sets.") in full


def test_table9_names_the_anomaly_sets_and_only_the_papers_are_comparable():
    """The generated three alone (eval/ood.py without --ood) give another mean than the
    paper's seven sets, however full the other sets are."""
    rows = [r for r in sample_rows() if r.task != "ood"]
    rows += [report.row("ood", name, "auroc", 99.0, 10000, "msp", variant="msp")
             for name in ("gaussian", "rademacher", "blobs")]
    rows += [report.row("ood", "mean", "auroc", 99.0, 30000, "msp", variant="msp")]
    md = report.table9_markdown(rows, num_classes=1000)
    notes = md.split("\n\n", 1)[1]  # under the table
    assert ("this model: AUROC/AUPR are the mean over 3 anomaly sets (gaussian, rademacher, "
            "blobs); the paper's are Gaussian, Rademacher, Blobs, Textures, SVHN, LSUN and "
            "Places69 (missing here: textures, svhn, lsun, places69): not comparable") in notes
    assert ("3 anomaly set(s); its AUROC/AUPR average over other anomaly sets than the "
            "paper's: not comparable.") in notes
    extra = rows + [report.row("ood", name, "auroc", 90.0, 100, "msp", variant="msp")
                    for name in ("dtd", "svhn", "lsun", "places69", "inaturalist")]
    assert "not comparable" in report.table9_markdown(extra, num_classes=1000)  # one too many
