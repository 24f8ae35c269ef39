"""Batched pixmix(): traced samples recomputed by the PIL oracle, mixing maths, determinism."""
import math

import numpy as np
import pytest
import torch
from scenes import scene

from dali_pixmix.augment import ops as A
from dali_pixmix.augment import pil_oracle as R
from dali_pixmix.augment.pixmix import mix_add, mix_multiply, op_params, pixmix, sample_ab

pytestmark = pytest.mark.unit

GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
STRATEGIES = ("grouped", "dense")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    images = np.stack([scene(rng, 30, 34) for _ in range(48)])
    mixing = np.stack([scene(rng, 30, 34) for _ in range(48)])
    return images, mixing


def ops_used(trace):
    used = [trace["start"]] + [r["partner"] for r in trace["rounds"]]
    return {u[0] for u in used if isinstance(u, list)}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("severity, all_ops", [(1, True), (3, True), (10, False)])
def test_traced_samples_replay_with_pil(data, severity, all_ops, strategy):
    images, mixing = data
    gen = torch.Generator().manual_seed(severity)
    out, traces = pixmix(torch.from_numpy(images), torch.from_numpy(mixing), k=4, beta=4.0,
                         severity=severity, all_ops=all_ops, generator=gen, trace=True,
                         strategy=strategy)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    for i, tr in enumerate(traces):
        ref = R.replay(images[i], mixing[i], tr)
        diff = np.abs(out[i].numpy() - ref)
        if ops_used(tr) & GEOMETRIC:
            # A geometric op may truncate one grey level differently from PIL on a few pixels
            # (float32 vs float64 coordinates); later rounds scale that by |a|, |b| <= 2.
            assert diff.max() < 0.1, tr
            assert (diff > 1e-5).mean() < 0.01, tr
        else:
            # Same uint8 ops bit for bit; only float32 rounding of the mixing differs.
            assert diff.max() < 1e-5, tr


def test_trace_format_and_parameters(data):
    images, mixing = data
    gen = torch.Generator().manual_seed(0)
    _, traces = pixmix(torch.from_numpy(images), torch.from_numpy(mixing), k=3, severity=10,
                       generator=gen, trace=True)
    int_ops = {"posterize", "rotate", "solarize", "translate_x", "translate_y"}
    for tr in traces:
        assert set(tr) == {"start", "rounds"} and len(tr["rounds"]) <= 3
        entries = [tr["start"]] + [r["partner"] for r in tr["rounds"]]
        for e in entries:
            if e is None or e == "mixing":
                continue
            name, param = e
            assert name in A.ALL_OPS
            if name in ("autocontrast", "equalize"):
                assert param is None
            elif name in int_ops:
                assert isinstance(param, int)
            else:
                assert isinstance(param, float)
        for r in tr["rounds"]:
            assert r["mix"] in ("add", "multiply")
            assert isinstance(r["a"], float) and isinstance(r["b"], float)


def test_level_to_parameter_mapping_matches_reference():
    levels = torch.linspace(0.1, 10, 997, dtype=torch.float64)
    negate = torch.arange(997) % 2 == 0
    for op in A.ALL_OPS:
        got = op_params(op, levels, negate, 224, 160)
        want = [R.op_param(op, float(lv), bool(ng), 160, 224) for lv, ng in zip(levels, negate)]
        if got is None:
            assert all(w is None for w in want)
        else:
            assert got.tolist() == want, op


def test_same_seed_same_output_and_chunking_does_not_matter(data):
    images, mixing = (torch.from_numpy(a[:20]) for a in data)
    def run(seed, **kw):
        return pixmix(images, mixing, generator=torch.Generator().manual_seed(seed), **kw)
    first = run(5)
    assert torch.equal(first, run(5))
    assert torch.equal(first, run(5, chunk_size=1))
    assert torch.equal(first, run(5, chunk_size=7))
    assert not torch.equal(first, run(6))
    dense = run(5, strategy="dense")
    assert torch.equal(dense, run(5, strategy="dense"))
    assert not torch.equal(dense, run(6, strategy="dense"))
    assert (dense - first).abs().max() < 1e-5  # same plan: same result to float32 rounding


def test_host_workers_split_samples_without_changing_the_output(data):
    import threading

    images, mixing = (torch.from_numpy(a[:20]) for a in data)
    def run(**kw):
        return pixmix(images, mixing, generator=torch.Generator().manual_seed(3), **kw)
    single = run(host_workers=1)
    for workers in (0, 2, 3, 40):  # 0: on this thread
        assert torch.equal(single, run(host_workers=workers)), workers
    threads_before = torch.get_num_threads()
    from_thread = {}
    worker = threading.Thread(target=lambda: from_thread.update(out=run(host_workers=2)))
    worker.start()
    worker.join()
    assert torch.equal(single, from_thread["out"])
    assert torch.get_num_threads() == threads_before  # the workers' setting does not leak


def test_ranges_are_shared_by_fewer_workers_each_run_once():
    """More sample ranges than host workers (the pool takes them in turn), each run once, by
    at most the given number of threads."""
    import threading

    from dali_pixmix.augment._cpu_split import part_count, run_parts

    seen, threads = [], set()

    def run(start, stop):
        seen.append((start, stop))
        threads.add(threading.get_ident())

    run_parts(run, [0, 3, 5, 9, 12, 20], workers=2)
    assert sorted(seen) == [(0, 3), (3, 5), (5, 9), (9, 12), (12, 20)]
    assert len(threads) <= 2
    assert part_count(2, 64) == 4 and part_count(3, 2) == 2 and part_count(1, 1) == 1


def test_small_pictures_stay_on_one_host_worker_by_default():
    """CIFAR-sized pictures are too little work per sample for the host split (it halved the
    CIFAR data path's images/s on 2 cores): one worker below 96 x 96 px, torch's thread count
    from there on."""
    from dali_pixmix.augment._cpu_split import default_host_workers

    def batch(side):
        return torch.zeros((4, side, side, 3), dtype=torch.uint8)

    assert default_host_workers(batch(32)) == default_host_workers(batch(95)) == 1
    assert default_host_workers(batch(96)) == default_host_workers(batch(224)) == \
        torch.get_num_threads()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_normalized_output_format_equals_normalising_the_unit_output(data, strategy):
    from dali_pixmix.augment.pixmix import Normalized

    images, mixing = (torch.from_numpy(a[:12]) for a in data)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    def run(**kw):
        return pixmix(images, mixing, generator=torch.Generator().manual_seed(4),
                      strategy=strategy, **kw)
    unit = run().numpy()
    expected = (unit - np.float32(mean)) * (1 / np.float32(std))
    for layout, dtype in (("HWC", torch.float32), ("CHW", torch.float32), ("CHW", torch.float16)):
        out = run(output=Normalized(mean, std, layout, dtype), chunk_size=5, host_workers=2)
        assert out.dtype == dtype and out.is_contiguous()
        want = expected.transpose(0, 3, 1, 2) if layout == "CHW" else expected
        np.testing.assert_array_equal(out.numpy(), want.astype(out.numpy().dtype))
    with pytest.raises(ValueError, match="layout"):
        Normalized(mean, std, "NCHW")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_rounds_no_start_gives_the_scaled_original(data, strategy):
    images, mixing = (torch.from_numpy(a) for a in data)
    out, traces = pixmix(images, mixing, k=0, generator=torch.Generator().manual_seed(1),
                         trace=True, strategy=strategy)
    plain = [i for i, t in enumerate(traces) if t["start"] is None]
    assert 0 < len(plain) < len(traces) and all(t["rounds"] == [] for t in traces)
    assert torch.equal(out[plain], images[plain].float() / 255)


def test_inputs_are_not_modified_and_bad_inputs_are_refused(data):
    images, mixing = (torch.from_numpy(a.copy()) for a in data)
    before = images.clone(), mixing.clone()
    for strategy in STRATEGIES:
        pixmix(images, mixing, generator=torch.Generator().manual_seed(2), strategy=strategy)
        assert torch.equal(images, before[0]) and torch.equal(mixing, before[1])
    with pytest.raises(ValueError, match="strategy"):
        pixmix(images, mixing, strategy="fast")
    with pytest.raises(ValueError, match="cuda_graph"):
        pixmix(images, mixing, strategy="dense", cuda_graph=True)  # CPU images
    with pytest.raises(ValueError, match="mixing_pics"):
        pixmix(images, mixing[:-1])
    with pytest.raises(ValueError, match="uint8"):
        pixmix(images.float(), mixing)
    with pytest.raises(ValueError, match="severity"):
        pixmix(images, mixing, severity=0.05)


def test_mixing_maths_by_hand():
    x1 = torch.tensor([0.25, 0.0, 1.0]).view(3, 1, 1, 1)
    x2 = torch.tensor([0.75, 0.0, 0.5]).view(3, 1, 1, 1)
    a = torch.tensor([0.5, 1.5, 1.2])
    b = torch.tensor([0.3, -0.4, -0.7])
    add = mix_add(x1, x2, a, b).flatten().tolist()
    for i in range(3):
        x, y, aa, bb = float(x1[i]), float(x2[i]), float(a[i]), float(b[i])
        assert add[i] == pytest.approx(((aa * (2 * x - 1) + bb * (2 * y - 1)) + 1) / 2, abs=1e-6)
    mul = mix_multiply(x1, x2, a, b).flatten().tolist()
    assert mul[0] == pytest.approx((0.5 ** 0.5) * (1.5 ** 0.3) / 2, rel=1e-6)
    assert mul[1] == 0.0                       # 0 ** a with a > 0; partner 0 clamped, finite
    assert mul[2] == pytest.approx((2.0 ** 1.2) * (1.0 ** -0.7) / 2, rel=1e-6)
    assert all(math.isfinite(v) for v in mul)


# ----------------------------------------------------------------------------- production mixing

def grouped_rounds(start_u8, partners_u8, a, b, multiply):
    """Mixing rounds by the grouped strategy's production code (``_mix_in_place``, which runs
    on runs of samples sharing an op: here one sample at a time)."""
    from dali_pixmix.augment.pixmix.grouped import _mix_in_place, _Scratch

    mixed = torch.div(start_u8, 255.0)  # as _execute scales the start images
    scratch = _Scratch.for_chunk(start_u8.shape[0], start_u8)
    for r, partner in enumerate(partners_u8):
        for i in range(start_u8.shape[0]):
            _mix_in_place(mixed[i:i + 1], partner[i:i + 1], a[r, i:i + 1], b[r, i:i + 1],
                          bool(multiply[r, i]), scratch, start_u8[i:i + 1] if r == 0 else None)
    return mixed


def dense_rounds(start_u8, partners_u8, a, b, multiply):
    """The same rounds by the dense strategy's production code (``dense.mix``), every sample
    doing every round."""
    from dali_pixmix.augment.pixmix._dense_plan import Shape
    from dali_pixmix.augment.pixmix.dense import mix

    m, h, w, _ = start_u8.shape
    k = len(partners_u8)
    table = torch.cat([start_u8, *partners_u8])
    p = {"start_row": torch.arange(m), "first_a": a[0], "first_multiply": multiply[0],
         "partner_row": torch.arange(m, (k + 1) * m), "a": a.reshape(-1), "b": b.reshape(-1),
         "multiply": multiply.reshape(-1)}
    return mix(table, p, Shape(m, h, w, (0, 0, 0, 0), (m,) * k)).view(start_u8.shape)


PRODUCTION_ROUNDS = {"grouped": grouped_rounds, "dense": dense_rounds}


def oracle_rounds(start_u8, partners_u8, a, b, multiply):
    """The spec's formulas, by the PIL oracle's numpy float32 functions, clamped per round."""
    out = []
    for i in range(start_u8.shape[0]):
        mixed = start_u8[i].numpy().astype(np.float32) / np.float32(255)
        for r, partner in enumerate(partners_u8):
            op = R.multiply if multiply[r, i] else R.add
            x2 = partner[i].numpy().astype(np.float32) / np.float32(255)
            mixed = np.clip(op(mixed, x2, float(a[r, i]), float(b[r, i])), 0, 1)
        out.append(mixed)
    return np.stack(out)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_production_mixing_rounds_match_the_spec_formulas(strategy):
    gen = torch.Generator().manual_seed(7)
    m, k = 24, 3
    start = torch.randint(0, 256, (m, 5, 6, 3), dtype=torch.uint8, generator=gen)
    start[:, 0] = torch.tensor([0, 255, 1], dtype=torch.uint8)  # black, white, nearly black
    partners = [torch.randint(0, 256, (m, 5, 6, 3), dtype=torch.uint8, generator=gen)
                for _ in range(k)]
    partners[0][:, 1] = 0  # a black partner: clamped away from 0 for negative b
    a, b = sample_ab(4.0, k * m, gen)
    multiply = torch.rand(k, m, generator=gen) < 0.5
    multiply[:, :2] = torch.tensor([True, False])  # both ops in every round
    args = (start, partners, a.view(k, m), b.view(k, m), multiply)
    got = PRODUCTION_ROUNDS[strategy](*args).numpy()
    want = oracle_rounds(*args)
    assert np.isfinite(got).all() and 0 <= got.min() and got.max() <= 1
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert (want == 0).any() and (want == 1).any()  # both clamps were exercised


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_production_mixing_by_hand(strategy):
    """One round on single pixels, against the spec's formulas evaluated by hand."""
    x1 = torch.tensor([64, 0, 255, 128], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 1, 3)
    x2 = torch.tensor([191, 0, 128, 0], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 1, 3)
    a = torch.tensor([[0.5, 1.5, 1.2, 0.9]])
    b = torch.tensor([[0.3, -0.4, -0.7, -0.2]])
    for multiply in (False, True):
        flags = torch.full((1, 4), multiply)
        got = PRODUCTION_ROUNDS[strategy](x1.contiguous(), [x2.contiguous()], a, b, flags)
        for i in range(4):
            x, y = int(x1[i, 0, 0, 0]) / 255, int(x2[i, 0, 0, 0]) / 255
            aa, bb = float(a[0, i]), float(b[0, i])
            if multiply:
                want = (2 * x) ** aa * max(2 * y, 1e-37) ** bb / 2
            else:
                want = ((aa * (2 * x - 1) + bb * (2 * y - 1)) + 1) / 2
            assert float(got[i, 0, 0, 0]) == pytest.approx(min(max(want, 0.0), 1.0), abs=1e-6)


def test_sample_ab_branches():
    a, b = sample_ab(4.0, 20000, torch.Generator().manual_seed(0))
    assert a.dtype == torch.float32 and a.shape == (20000,)
    interp = a < 1
    assert torch.all((b[interp] > 0) & (b[interp] < 1) & (a[interp] > 0))
    assert torch.all((a[~interp] >= 1) & (a[~interp] < 2) & (b[~interp] <= 0) & (b[~interp] > -1))
    with pytest.raises(ValueError, match="beta"):
        sample_ab(0.0, 4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_edge_shapes_empty_tiny_and_non_contiguous(strategy):
    gen = torch.Generator().manual_seed(4)
    empty = torch.zeros(0, 8, 8, 3, dtype=torch.uint8)
    out, traces = pixmix(empty, empty, generator=gen, trace=True, strategy=strategy)
    assert out.shape == (0, 8, 8, 3) and traces == []
    for shape in [(40, 1, 1, 3), (40, 2, 5, 3)]:  # below the 3x3 filter size
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        m = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        out, traces = pixmix(x, m, severity=10, generator=gen, trace=True, strategy=strategy)
        for i, tr in enumerate(traces):
            assert np.abs(out[i].numpy() - R.replay(x[i].numpy(), m[i].numpy(), tr)).max() < 1e-5
    planar = torch.randint(0, 256, (3, 3, 9, 9), dtype=torch.uint8, generator=gen)
    hwc = planar.permute(0, 2, 3, 1)  # a channels-last view, not contiguous
    def run(x):
        return pixmix(x, x, generator=torch.Generator().manual_seed(1), strategy=strategy)
    assert torch.equal(run(hwc), run(hwc.contiguous()))
