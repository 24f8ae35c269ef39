"""benchmarks/methods_vs_torchvision.py at toy size: it runs both sides of each method and prints
its lines and table (what it prints, not how fast: speed is the benchmark's business)."""
import re
import textwrap

import pytest
from entry_points import load_script

pytestmark = pytest.mark.integration

# A stand-in with the reference code's interface (andyzoujm/pixmix imagenet.py, which is never
# downloaded): it parses its command line and makes its save folder when imported, and
# `PixMixDataset(dataset, mixing_set, preprocess)` returns normalised tensors.
FAKE_REFERENCE = '''
import argparse
import os

import numpy as np
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--mixing-set", required=True)
parser.add_argument("--num-classes", required=True)
parser.add_argument("--all-ops", action="store_true")
parser.add_argument("--save", required=True)
args = parser.parse_args()
os.makedirs(args.save)


class PixMixDataset(torch.utils.data.Dataset):
    def __init__(self, dataset, mixing_set, preprocess):
        self.dataset, self.mixing_set, self.preprocess = dataset, mixing_set, preprocess

    def __getitem__(self, i):
        x, y = self.dataset[i]
        mix, _ = self.mixing_set[np.random.choice(len(self.mixing_set))]
        tensorize = self.preprocess["tensorize"]
        return self.preprocess["normalize"]((tensorize(x) + tensorize(mix)) / 2), y

    def __len__(self):
        return len(self.dataset)
'''
LINE = re.compile(r"^method=(\w+) ours=(\d+\.\d) torchvision=(\d+\.\d) ratio=(\d+\.\d\d)$", re.M)


def run(tmp_path, capsys, *methods, reference=None):
    argv = ["--methods", *methods, "--batch-size", "4", "--rounds", "1", "--measure", "8",
            "--settle", "0", "--images", "16", "--mixing", "4", "--workers", "1",
            "--cache-dir", str(tmp_path / "cache")]
    if reference is not None:
        argv += ["--pixmix-reference", str(reference)]
    assert load_script("benchmarks/methods_vs_torchvision.py").main(argv) == 0
    return capsys.readouterr().out


def test_prints_a_line_per_method_a_table_and_the_differences(tmp_path, capsys):
    out = run(tmp_path, capsys, "cutout", "mixup", "pixmix")
    lines = LINE.findall(out)
    assert [m for m, *_ in lines] == ["cutout", "mixup"]
    for _, ours, theirs, ratio in lines:
        assert float(ours) > 0 and float(theirs) > 0
        assert float(ratio) == pytest.approx(float(ours) / float(theirs), abs=0.01)
    # no reference checkout: the PixMix row is skipped, with the reason, never downloaded
    assert "method=pixmix skipped: the PixMix reference code is absent" in out
    assert "| method | ours, img/s | torchvision, img/s | ratio |" in out
    assert re.search(r"^\| cutout \| [\d,]+ \| [\d,]+ \| \d+\.\d\d \|$", out, re.M)
    assert re.search(r"^\| pixmix \| \| \| skipped: ", out, re.M)
    assert "- cutout: torchvision's RandomErasing" in out and "- pixmix: " in out


def test_pixmix_rows_use_the_reference_checkout(tmp_path, capsys):
    checkout = tmp_path / "pixmix"
    checkout.mkdir()
    (checkout / "imagenet.py").write_text(textwrap.dedent(FAKE_REFERENCE))
    out = run(tmp_path, capsys, "pixmix_cutmix", reference=checkout)
    assert [m for m, *_ in LINE.findall(out)] == ["pixmix_cutmix"]
    assert "skipped" not in out
