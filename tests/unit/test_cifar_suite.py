"""The CIFAR safety suite end to end through the runner, on tiny sets written in the released
layouts, against numbers computed here from the definitions: the model's logits are a linear
function of the normalised pictures' channel means, so every prediction is computable in numpy."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from dali_pixmix.data.cifar import CIFAR_MEAN, CIFAR_STD, write_cifar
from dali_pixmix.distributed import DistInfo
from dali_pixmix.evaluation.cifar import (
    CifarSuite,
    OpenedSuite,
    read_pictures,
    run_cifar_ood,
    run_cifar_suite,
)
from dali_pixmix.evaluation.cifar_report import cifar_table_markdown, table_numbers
from dali_pixmix.evaluation.pgd import PgdSettings, run_pgd_arrays
from dali_pixmix.evaluation.runner import Evaluator
from dali_pixmix.metrics.calibration import rms_calibration_error
from dali_pixmix.metrics.cifar import CIFAR_C_CORRUPTIONS, CIFAR_P_PERTURBATIONS

pytestmark = pytest.mark.unit

CLASSES = [f"c{k}" for k in range(10)]
WEIGHT = np.random.default_rng(1).normal(0, 3, (10, 3))
BIAS = np.random.default_rng(2).normal(0, 0.5, 10)


class ChannelLinear(torch.nn.Module):
    """logits = WEIGHT @ (channel means of the normalised input) + BIAS."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(WEIGHT, dtype=torch.float32))
        self.bias = torch.nn.Parameter(torch.tensor(BIAS, dtype=torch.float32))

    def forward(self, x):
        return x.mean(dim=(2, 3)) @ self.weight.T + self.bias


def logits_of(images):
    """float64 logits of uint8 [..., 32, 32, 3] pictures, from the definitions."""
    x = (images.astype(np.float64) / 255 - 0.5) / 0.5
    return x.mean(axis=(-3, -2)) @ WEIGHT.T + BIAS


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def pictures(rng, *shape):
    """uint8 [*shape, 32, 32, 3]: a random colour per picture plus noise (varied predictions)."""
    base = rng.integers(0, 256, (*shape, 1, 1, 3))
    return np.clip(base + rng.integers(-40, 41, (*shape, 32, 32, 3)), 0, 255).astype(np.uint8)


def assert_separated(images):
    """The test's premise: no two of the top 6 logits within float32 noise of each other."""
    top = -np.sort(-logits_of(images), axis=-1)[..., :6]
    assert np.abs(np.diff(top, axis=-1)).min() > 1e-5


def evaluator(out, batch_size=6):
    return Evaluator(ChannelLinear(), CLASSES, out=out, model_key="linear", batch_size=batch_size,
                     dist=DistInfo(), progress=False, normalisation=(CIFAR_MEAN, CIFAR_STD))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """CIFAR-10 (python format, 12 test pictures), a complete CIFAR-C of 8 per cell, a C-bar
    with 3 of its 10 corruptions, a complete CIFAR-P of 3 videos x 4 frames."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    test, train = pictures(rng, 12), pictures(rng, 10)
    write_cifar(root, "cifar10", "python", {"train": (train, np.arange(10)),
                                            "test": (test, rng.integers(0, 10, 12))}, CLASSES)
    c_labels = rng.integers(0, 10, 8)
    sets = {"c": {n: pictures(rng, 40) for n in CIFAR_C_CORRUPTIONS},
            "cbar": {n: pictures(rng, 40) for n in ("ripple", "lines", "sparkles")}}
    for key, arrays in sets.items():
        (root / key).mkdir()
        for name, images in arrays.items():
            np.save(root / key / f"{name}.npy", images)
        np.save(root / key / "labels.npy", np.tile(c_labels, 5))
    (root / "p").mkdir()
    sets["p"] = {n: pictures(rng, 3, 4) for n in CIFAR_P_PERTURBATIONS}
    for name, videos in sets["p"].items():
        np.save(root / "p" / f"{name}.npy", videos)
    for arrays in sets.values():
        for images in arrays.values():
            assert_separated(images)
    return root, sets, c_labels


def by_key(rows, **match):
    hits = [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, hits)
    return hits[0].value


def test_corruption_rows_equal_hand_computed_errors(data, tmp_path):
    root, sets, labels = data
    suite = CifarSuite(str(root), c=str(root / "c"), cbar=str(root / "cbar"),
                       synthetic_ood=False, near_ood=False, bin_size=4)
    result = run_cifar_suite(evaluator(tmp_path), "cifar10", suite)
    rows = result.rows
    cells = {}
    for task, key in (("cifar_c", "c"), ("cifar_cbar", "cbar")):
        for name, images in sets[key].items():
            wrong = logits_of(images).argmax(axis=1) != np.tile(labels, 5)
            cells[task, name] = wrong.reshape(5, 8).mean(axis=1)  # severity-major
            for s in range(1, 6):
                assert by_key(rows, task=task, variant=name, severity=s, metric="error") == \
                    pytest.approx(100 * cells[task, name][s - 1])
            assert by_key(rows, task=task, variant=name, severity=None, metric="error") == \
                pytest.approx(100 * cells[task, name].mean())
    c_cells = np.stack([cells["cifar_c", n] for n in CIFAR_C_CORRUPTIONS])  # [15, 5]
    assert by_key(rows, task="cifar_c", variant="mean", metric="mean_error") == \
        pytest.approx(100 * c_cells.mean())  # plain mean over the 75 cells: no AlexNet
    for s in range(1, 6):
        assert by_key(rows, task="cifar_c", variant="mean", severity=s, metric="error") == \
            pytest.approx(100 * c_cells[:, s - 1].mean())
    cbar = np.stack([cells["cifar_cbar", n] for n in ("ripple", "lines", "sparkles")])
    assert by_key(rows, task="cifar_cbar", variant="partial: 3 of 10 corruptions",
                  metric="mean_error") == pytest.approx(100 * cbar.mean())
    # calibration of one cell from numpy's confidences, and the summary = mean over cells
    z = logits_of(sets["c"]["fog"][16:24])
    conf, correct = softmax(z).max(axis=1), z.argmax(axis=1) == labels
    assert by_key(rows, task="cifar_c", variant="fog", severity=3, metric="rms") == \
        pytest.approx(100 * rms_calibration_error(conf, correct, 4), abs=1e-4)
    cell_rms = [r.value for r in rows if r.task == "cifar_c" and r.metric == "rms" and r.severity]
    assert len(cell_rms) == 75
    assert by_key(rows, task="cifar_c", variant="mean", metric="rms") == \
        pytest.approx(np.mean(cell_rms))
    # the table: C full, C-bar starred as partial, clean from the test split
    numbers = table_numbers(rows, "cifar10")
    assert numbers["C mCE"].value == pytest.approx(100 * c_cells.mean())
    assert "| this model |" in result.markdown and f"{100 * cbar.mean():.1f}*" in \
        result.markdown and "C-bar, RMS C-bar over 3 of 10 corruptions" in result.markdown
    saved = json.loads((tmp_path / "results" / "cifar_c.json").read_text())
    assert len(saved) == sum(r.task == "cifar_c" for r in rows)
    assert (tmp_path / "table8.md").read_text() == result.markdown
    assert (tmp_path / "plots" / "cifar_severity.png").is_file()
    assert (tmp_path / "plots" / "cifar_corruption_errors.png").is_file()


def flip_and_distance(videos, noise):
    """(flip probability, mean top-5 distance) of [videos, frames] pictures, by the definition:
    noise against frame 0, others adjacent frames; ranks beyond the 5th count as 5."""
    z = logits_of(videos)
    flips, distances = [], []
    for video in z:
        order = np.argsort(-video, axis=1)
        pairs = [(0, t) for t in range(1, len(video))] if noise else \
            [(t - 1, t) for t in range(1, len(video))]
        flips.append(np.mean([order[a, 0] != order[b, 0] for a, b in pairs]))
        per_pair = []
        for a, b in pairs:
            rank = {int(k): i for i, k in enumerate(order[b])}
            per_pair.append(sum(abs(j - min(rank[int(order[a, j])], 5)) for j in range(5)))
        distances.append(np.mean(per_pair))
    return np.mean(flips), np.mean(distances)


def test_cifar_p_rows_equal_hand_computed_flips_and_distances(data, tmp_path):
    root, sets, _ = data
    suite = CifarSuite(str(root), p=str(root / "p"), synthetic_ood=False, near_ood=False,
                       bin_size=4)
    rows = run_cifar_suite(evaluator(tmp_path, batch_size=5), "cifar10", suite).rows
    fps, t5ds = {}, {}
    for name, videos in sets["p"].items():
        fps[name], t5ds[name] = flip_and_distance(videos, "noise" in name)
        assert by_key(rows, task="cifar_p", variant=name, metric="flip_prob") == \
            pytest.approx(100 * fps[name])
        assert by_key(rows, task="cifar_p", variant=name, metric="ut5d_ranks") == \
            pytest.approx(t5ds[name])
    assert len({round(v, 6) for v in t5ds.values()}) > 3  # the data exercise the distance
    assert by_key(rows, task="cifar_p", variant="mean", metric="mfr") == \
        pytest.approx(100 * np.mean(list(fps.values())))
    assert by_key(rows, task="cifar_p", variant="mean", metric="mt5d_ranks") == \
        pytest.approx(np.mean(list(t5ds.values())))


def numpy_pgd(images, labels, eps, steps, step, seed, ball):
    """The reference PGD on the linear model, written out: the summed cross-entropy's gradient
    with respect to a pixel is (p - onehot) @ W for its channel, / (H W std)."""
    x = images.transpose(0, 3, 1, 2).astype(np.float64) / 255
    noise = np.stack([np.random.default_rng([seed, i]).uniform(-eps, eps, x.shape[1:])
                      for i in range(len(x))]).astype(np.float32)
    adv = x + noise
    centre = adv.copy() if ball == "reference" else x
    onehot = np.eye(10)[labels]
    for _ in range(steps):
        z = ((adv - 0.5) / 0.5).mean(axis=(2, 3)) @ WEIGHT.T + BIAS
        grad = (softmax(z) - onehot) @ WEIGHT  # [N, 3], the sign of every pixel's gradient
        adv = adv + step * np.sign(grad)[:, :, None, None]
        adv = np.clip(np.clip(adv, centre - eps, centre + eps), 0, 1)
    z = ((adv - 0.5) / 0.5).mean(axis=(2, 3)) @ WEIGHT.T + BIAS
    return z.argmax(axis=1) != labels


@pytest.mark.parametrize("ball", ["clean", "reference"])
def test_pgd_rows_equal_an_independent_attack_whatever_the_batch_size(tmp_path, ball):
    rng = np.random.default_rng(3)
    base = 128 + rng.integers(-40, 41, (13, 1, 1, 3))  # greyish: near the decision borders
    images = np.clip(base + rng.integers(-40, 41, (13, 32, 32, 3)), 0, 255).astype(np.uint8)
    labels = logits_of(images).argmax(axis=1)  # all correct before the attack
    settings = PgdSettings(epsilon=8 / 255, steps=4, step_size=2 / 255, ball=ball, seed=5)
    wrong = numpy_pgd(images, labels, 8 / 255, 4, 2 / 255, 5, ball)
    assert 2 <= wrong.sum() <= 11  # the attack flips some of these pictures, not all
    rows = {}
    for batch in (4, 13):
        (rows[batch],) = run_pgd_arrays(evaluator(tmp_path / str(batch), batch), images, labels,
                                        "cifar10_test", settings)
    assert rows[4].value == rows[13].value == pytest.approx(100 * wrong.mean())
    assert rows[4].task == "pgd" and rows[4].n == 13 and f"ball={ball}" in rows[4].protocol
    (part,) = run_pgd_arrays(evaluator(tmp_path / "part"), images, labels, "cifar10_test",
                             PgdSettings(epsilon=8 / 255, steps=4, step_size=2 / 255, ball=ball,
                                         seed=5, count=5))
    chosen = [0, 3, 6, 9, 12]  # evenly spaced, first and last included
    assert part.n == 5 and "subset=5-of-13" in part.protocol
    assert part.value == pytest.approx(100 * wrong[chosen].mean())


def test_pgd_classifies_in_eval_mode_and_leaves_the_model_as_it_was(tmp_path):
    """Batch norm and dropout: the adversaries are classified in eval mode (so the batch size
    does not matter), the running statistics stay, the caller's train mode comes back."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 10))
    model[1].running_mean.fill_(0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = pictures(np.random.default_rng(6), 7), np.arange(7)
    values = []
    for batch in (2, 7):
        ev = Evaluator(model, CLASSES, out=tmp_path / str(batch), model_key="bn",
                       batch_size=batch, dist=DistInfo(), progress=False,
                       normalisation=(CIFAR_MEAN, CIFAR_STD))
        run_pgd_arrays(ev, images, labels, "cifar10_test", PgdSettings(steps=1, seed=1))
        cached = np.load(tmp_path / str(batch) / "cache" / "pgd" / "cifar10_test.npz")
        values.append(cached["confidence"])
        assert model.training
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, before[key])
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5)


def torchvision_32(path):
    from torchvision import transforms

    pipeline = transforms.Compose([transforms.Resize(32), transforms.CenterCrop(32)])
    return np.asarray(pipeline(Image.open(path).convert("RGB")))


def test_ood_sets_resized_like_torchvision_and_near_ood_kept_out_of_the_mean(data, tmp_path):
    root, _, _ = data
    folder = tmp_path / "textures" / "nested"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(4)
    for i, (h, w) in enumerate([(45, 70), (32, 32), (90, 33), (50, 50), (33, 47)]):
        Image.fromarray(pictures(rng, 1)[0].repeat(3, 0).repeat(3, 1)[:h, :w]).save(
            folder / f"{i}.png")
    files = sorted(str(p) for p in folder.glob("*.png"))
    pics = read_pictures(files, 32, threads=2, progress=False)
    np.testing.assert_array_equal(pics, np.stack([torchvision_32(f) for f in files]))

    near_root = tmp_path / "with_near"
    test = pictures(rng, 12)
    write_cifar(near_root, "cifar10", "python", {"train": (test[:10], np.arange(10)),
                                                 "test": (test, np.arange(12) % 10)}, CLASSES)
    other = pictures(rng, 6)
    write_cifar(near_root, "cifar100", "python", {"train": (other, np.arange(6)),
                                                  "test": (other, np.arange(6))},
                [f"k{i}" for i in range(6)])
    suite = CifarSuite(str(near_root), ood={"textures": str(tmp_path / "textures")},
                       synthetic_count=7, bin_size=4)
    rows = run_cifar_suite(evaluator(tmp_path / "out"), "cifar10", suite).rows
    ood = [r for r in rows if r.task == "cifar_ood" and r.variant == "msp"]
    inside = -softmax(logits_of(test)).max(axis=1)  # the MSP anomaly score
    outside = -softmax(logits_of(pics)).max(axis=1)
    expected = roc_auc_score(np.r_[np.zeros(12), np.ones(5)], np.r_[inside, outside])
    assert by_key(ood, dataset="textures", metric="auroc") == pytest.approx(100 * expected)
    far = [r for r in ood if r.metric == "auroc" and r.dataset not in ("mean", "cifar100")]
    assert sorted(r.dataset for r in far) == ["blobs", "gaussian", "rademacher", "textures"]
    assert [r.n for r in far if r.dataset == "gaussian"] == [7]
    assert by_key(ood, dataset="mean", metric="auroc") == pytest.approx(
        np.mean([r.value for r in far]))
    near = [r for r in ood if r.dataset == "cifar100"]
    assert near and all("near-ood" in r.protocol for r in near) and near[0].n == 6
    table = (tmp_path / "out" / "table8.md").read_text()
    assert "textures (5)" in table and "Near-OOD cifar100 (not in the mean)" in table


def test_the_table_has_the_papers_rows_and_stars_partial_sets():
    from dali_pixmix.evaluation.report import row

    rows = [row("cifar_clean", "cifar100_test", "top1_error", 21.04, 10000, "p"),
            row("cifar_c", "cifar100_c", "mean_error", 33.33, 250000, "p",
                variant="partial: 5 of 15 corruptions"),
            row("pgd", "cifar100_test", "error", 95.0, 10000, "pgd-linf:eps=2/255;x"),
            row("pgd", "imagenet_val", "error", 99.0, 10, "other model's")]
    text = cifar_table_markdown(rows, "cifar100", "mine", num_classes=100)
    assert text.startswith("Table 7 layout of the PixMix paper (CIFAR-100")
    assert "| PixMix (paper) | 20.3 | 30.5 | 36.7 | 5.7 | 1.6 | 92.9 | 7.0 | 8.1 | 8.9 | 89.3 " \
           "| 70.9 |" in text
    assert "| mine | 21.0 | 33.3* | - | - | - | 95.0 | - | - | - | - | - |" in text
    assert "C mCE over 5 of 15 corruptions" in text and "PGD: pgd-linf:eps=2/255." in text
    assert "no AlexNet normalisation" in text


def test_a_corrupted_set_must_fit_the_models_classes(data, tmp_path):
    from dali_pixmix.data.cifar import CifarDataError
    from dali_pixmix.evaluation.cifar import open_suite

    root, _, _ = data
    with pytest.raises(CifarDataError, match=r"names 10 classes but the checkpoint's model has 5"):
        open_suite("cifar10", CLASSES[:5], CifarSuite(str(root)))
    bad = tmp_path / "c"
    bad.mkdir()
    np.save(bad / "fog.npy", np.zeros((41, 32, 32, 3), np.uint8))
    np.save(bad / "labels.npy", np.zeros(40, np.int64))
    with pytest.raises(CifarDataError, match=r"fog.npy holds 41 images but .*labels.npy has 40 "
                                             r"labels: expected 5 severities x 8 images"):
        open_suite("cifar10", CLASSES, CifarSuite(str(root), c=str(bad)))
    assert isinstance(OpenedSuite, type) and run_cifar_ood  # public API
