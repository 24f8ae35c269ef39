"""The batched PixMix ops and pixmix() on CUDA: same results as on CPU / PIL, deterministic;
the dense strategy eagerly and replayed from a CUDA graph, without host synchronisation.

Plans are drawn from CPU generators, as the DALI stage does (a CUDA generator would cost every
call a device-to-host copy of its plan)."""

import numpy as np
import pytest
import torch
from scenes import scenes

from dali_pixmix.augment import ops as A
from dali_pixmix.augment import pil_oracle as R
from dali_pixmix.augment.pixmix import Normalized, dense, pixmix

pytestmark = pytest.mark.gpu

GEOMETRIC = {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}
STRATEGIES = ("grouped", "dense")


def host_gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("op", A.ALL_OPS)
def test_ops_on_cuda_match_cpu(op):
    x = torch.from_numpy(scenes(6, 40, 52, 0))
    params = {"posterize": torch.tensor([4, 3, 2, 1, 4, 8]),
              "solarize": torch.tensor([231, 128, 0, 255, 256, 200]),
              "rotate": torch.tensor([2, -2, 30, 0, 1, -17]),
              "translate_x": torch.tensor([7, -7, 0, 3, 60, -1]),
              "translate_y": torch.tensor([7, -7, 0, 3, 60, -1])}
    p = params.get(op, torch.tensor([0.03, -0.03, 0.3, 0.12, -0.2, 0.0]) if op.startswith("shear")
                   else torch.tensor([0.118, 0.28, 1.9, 1.0, 0.5, 0.1]))
    p = None if op in ("autocontrast", "equalize") else p
    cpu = A.apply_op(x, op, p)
    gpu = A.apply_op(x.cuda(), op, None if p is None else p.cuda())
    n = x.shape[0]
    dense_gpu = dense.apply_ops(x.cuda(), torch.full((n,), A.ALL_OPS.index(op)),
                                torch.zeros(n, dtype=torch.float64) if p is None else p.double())
    for out in (gpu, dense_gpu):
        assert out.is_cuda and out.dtype == torch.uint8
        diff = (out.cpu().int() - cpu.int()).abs()
        if op in GEOMETRIC:
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.002
        else:
            assert diff.max() == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_pixmix_on_cuda_replays_with_pil_and_is_deterministic(strategy):
    images, mixing = scenes(32, 36, 44, 1), scenes(32, 36, 44, 2)
    xi, xm = torch.from_numpy(images).cuda(), torch.from_numpy(mixing).cuda()
    out, traces = pixmix(xi, xm, severity=3, generator=host_gen(3), trace=True,
                         strategy=strategy)
    assert out.is_cuda and out.dtype == torch.float32
    again = pixmix(xi, xm, severity=3, generator=host_gen(3), strategy=strategy)
    assert torch.equal(out, again)
    for i, tr in enumerate(traces):
        diff = np.abs(out[i].cpu().numpy() - R.replay(images[i], mixing[i], tr))
        geometric = {e[0] for e in [tr["start"]] + [r["partner"] for r in tr["rounds"]]
                     if isinstance(e, list)} & GEOMETRIC
        assert diff.max() < (0.1 if geometric else 1e-5)


def test_host_generator_drives_a_cuda_batch_like_a_cpu_batch():
    """Same CPU generator: CUDA (auto = dense) and CPU (auto = grouped) give the same batch."""
    images, mixing = scenes(16, 36, 44, 5), scenes(16, 36, 44, 6)
    xi, xm = torch.from_numpy(images), torch.from_numpy(mixing)
    on_cpu = pixmix(xi, xm, generator=host_gen(9))
    on_gpu = pixmix(xi.cuda(), xm.cuda(), generator=host_gen(9))
    assert on_gpu.is_cuda
    assert (on_gpu.cpu() - on_cpu).abs().max() < 0.1


@pytest.mark.parametrize("output", [None, Normalized((0.485, 0.456, 0.406),
                                                     (0.229, 0.224, 0.225), "CHW",
                                                     torch.float16)])
def test_cuda_graph_replay_equals_eager_dense(output):
    for n in (24, 40):
        xi = torch.from_numpy(scenes(n, 36, 44, n)).cuda()
        xm = torch.from_numpy(scenes(n, 36, 44, n + 1)).cuda()
        results = []
        for seed in range(4):
            def run(graph):
                return pixmix(xi, xm, severity=3, generator=host_gen(seed),
                              strategy="dense", output=output, cuda_graph=graph)
            eager, replayed = run(False), run(True)
            assert replayed.dtype == eager.dtype and replayed.shape == eager.shape
            assert torch.equal(eager, replayed), (n, seed)
            results.append((replayed, replayed.clone()))
        for kept, copy in results:  # each call returns its own tensor, not a static buffer
            assert torch.equal(kept, copy)


def test_cuda_graph_runs_eagerly_when_a_plan_exceeds_its_capacities(monkeypatch):
    xi = torch.from_numpy(scenes(20, 36, 44, 3)).cuda()
    xm = torch.from_numpy(scenes(20, 36, 44, 4)).cuda()
    eager = pixmix(xi, xm, generator=host_gen(1), strategy="dense")
    def tiny(batch, k, ops):
        return ((1, 1, 1, 1), (1,) * k)
    monkeypatch.setattr(dense, "capacities", tiny)
    assert torch.equal(eager, pixmix(xi, xm, generator=host_gen(1), cuda_graph=True))


def test_dense_cuda_batches_never_wait_for_the_gpu():
    xi = torch.from_numpy(scenes(32, 36, 44, 7)).cuda()
    xm = torch.from_numpy(scenes(32, 36, 44, 8)).cuda()
    pixmix(xi, xm, generator=host_gen(0), cuda_graph=True)  # capture (that synchronises once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for seed in range(3):
            pixmix(xi, xm, generator=host_gen(seed), strategy="dense")
            pixmix(xi, xm, generator=host_gen(seed), cuda_graph=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cached_constants_are_safe_on_another_stream():
    """The grouped strategy's cached maps and tables, built on one stream, used on another."""
    x = torch.from_numpy(scenes(8, 36, 44, 9)).cuda()
    m = torch.from_numpy(scenes(8, 36, 44, 10)).cuda()
    def run():
        return pixmix(x, m, severity=10, generator=host_gen(2), strategy="grouped",
                      output=Normalized((0.5,) * 3, (0.25,) * 3))
    reference = run()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        again = run()
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(reference, again)
