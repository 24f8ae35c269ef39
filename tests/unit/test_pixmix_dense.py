"""The dense PixMix strategy: a fixed kernel sequence, the grouped strategy's results, and
identity padding (the CUDA graph layout) that changes nothing."""
import numpy as np
import pytest
import torch
from scenes import scenes

from dali_pixmix.augment import ops as A
from dali_pixmix.augment._constants import stream_safe_cache
from dali_pixmix.augment.op_log import OpLog
from dali_pixmix.augment.pixmix import Normalized, dense, draw_plan, pixmix
from dali_pixmix.augment.pixmix._dense_plan import (
    Shape,
    _job_params,
    augmentation_arrays,
    capacities,
    fields,
    fits,
    needs,
    pack,
    plan_arrays,
    unpack,
)
from dali_pixmix.augment.pixmix.grouped import _run_augmentations
from dali_pixmix.augment.pixmix.plan import collect_jobs

pytestmark = pytest.mark.unit

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# ops whose launch depends on device values (a host synchronisation on CUDA) or whose output
# shape does
DATA_DEPENDENT = {"nonzero", "_local_scalar_dense", "unique", "_unique2", "unique_dim",
                  "masked_select", "bincount", "argwhere", "unique_consecutive"}


def batch(n, seed, h=18, w=22):
    return torch.from_numpy(scenes(n, h, w, seed)), torch.from_numpy(scenes(n, h, w, seed + 50))


def dense_inputs(images, mixing, plan, ops=A.ALL_OPS, rows=None, output=None):
    """(image table, packed plan, shape) for ``plan``, padded to ``rows`` if given."""
    n, h, w, _ = images.shape
    shape = Shape(n, h, w, *(rows or needs(plan, ops)))
    values = plan_arrays(plan, ops, shape, output)
    return dense.image_table(images, mixing, shape), pack(values, shape), shape


def test_kernel_sequence_does_not_depend_on_seed_or_batch_size():
    logs = {}
    for n in (6, 11):
        images, mixing = batch(n, n)
        for seed in (0, 1):
            plan = draw_plan(n, 4, 4.0, 10, 13, torch.Generator().manual_seed(seed), "cpu")
            table, buf, shape = dense_inputs(images, mixing, plan)
            with OpLog() as log:
                dense.run(table, buf, shape, Normalized((0.5,) * 3, (0.2,) * 3, "CHW"))
            logs[n, seed] = log.kernels()
    first = logs[6, 0]
    assert all(kernels == first for kernels in logs.values())
    assert not DATA_DEPENDENT & set(first)
    assert {"index_select", "gather", "addcmul", "lerp_", "index_add_"} <= set(first)
    # The recorder sees data-dependent sequences: the grouped strategy's differ by seed.
    grouped = []
    for seed in (0, 1):
        images, mixing = batch(6, 6)
        with OpLog() as log:
            pixmix(images, mixing, severity=10, generator=torch.Generator().manual_seed(seed),
                   strategy="grouped", host_workers=0)  # recorded on this thread
        grouped.append(log.kernels())
    assert grouped[0] != grouped[1] and DATA_DEPENDENT & set(grouped[0])


def test_dense_augmentations_equal_the_grouped_ones_on_the_same_plan():
    images, _ = batch(40, 3, 30, 34)
    n, h, w, _ = images.shape
    plan = draw_plan(n, 4, 4.0, 10, 13, torch.Generator().manual_seed(3), "cpu")
    jobs = collect_jobs(plan)
    grouped = _run_augmentations(images, plan, jobs, A.ALL_OPS)
    table, buf, shape = dense_inputs(images, images, plan)
    dense.augment_all(table, unpack(buf, shape), shape)
    params = _job_params(plan, jobs, A.ALL_OPS, h, w)
    rows = augmentation_arrays(jobs.op, A.ALL_OPS, params, jobs.sample, shape, {})
    got = table[rows]
    seen = set()
    for j, op_index in enumerate(jobs.op.tolist()):
        name = A.ALL_OPS[op_index]
        seen.add(name)
        diff = (got[j].int() - grouped[j].int()).abs()
        if name in GEOMETRIC:
            assert diff.max() <= 1 and (diff > 0).float().mean() < 0.002, name
        else:
            assert diff.max() == 0, name
    assert seen == set(A.ALL_OPS)


@pytest.mark.parametrize("output", [None, Normalized((0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "CHW",
                                                     torch.float16)])
def test_padding_to_graph_capacities_changes_nothing(output):
    images, mixing = batch(12, 4)
    n = images.shape[0]
    rows = capacities(n, 4, A.ALL_OPS)
    for seed in range(3):
        plan = draw_plan(n, 4, 4.0, 3, 13, torch.Generator().manual_seed(seed), "cpu")
        need = needs(plan, A.ALL_OPS)
        assert fits(need, rows) and sum(need[0]) < sum(rows[0]) and need[1] != rows[1]
        exact = dense.run(*dense_inputs(images, mixing, plan, output=output), output)
        padded = dense.run(*dense_inputs(images, mixing, plan, rows=rows, output=output), output)
        assert torch.equal(exact, padded)


def test_capacities_bound_random_plans_and_save_work():
    k, n = 4, 64
    rows = capacities(n, k, A.ALL_OPS)
    misses = sum(not fits(needs(draw_plan(n, k, 4.0, 1, 13, torch.Generator().manual_seed(s),
                                          "cpu"), A.ALL_OPS), rows) for s in range(300))
    assert misses <= 1  # designed for ~1e-4 per batch
    big = capacities(256, k, A.ALL_OPS)
    assert sum(big[0]) < 0.5 * (k + 1) * 256 and sum(big[1]) < 0.7 * k * 256
    assert capacities(1, k, A.ALL_OPS) == ((5, 5, 5, 5), (1, 1, 1, 1))  # all there can be
    assert capacities(8, k, A.OPS)[0][2:] == (0, 0)  # no colour / sharpness rows without all_ops


def test_plan_buffer_round_trip():
    shape = Shape(5, 7, 9, (3, 0, 2, 1), (5, 4, 1))
    gen = torch.Generator().manual_seed(0)
    values = {name: (torch.rand(size, generator=gen) * 100).to(dtype)
              for name, dtype, size, _ in fields(shape)}
    views = unpack(pack(values, shape), shape)
    assert set(views) == set(values)
    for name, value in values.items():
        assert views[name].dtype == value.dtype and torch.equal(views[name], value), name
    short = {"geo_coeffs": values["geo_coeffs"][:1], "a": values["a"][:2]}  # padded, missing
    views = unpack(pack(short, shape), shape)
    assert torch.equal(views["geo_coeffs"][0], values["geo_coeffs"][0])
    assert views["geo_coeffs"][1:].tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]] * 2
    assert views["a"].tolist()[2:] == [1.0] * 8 and not views["multiply"].any()
    assert views["lut_code"].tolist() == [] and views["sharp_factor"].tolist() == [1.0]


def test_dense_and_grouped_agree_end_to_end_and_trace_the_same_plan():
    images, mixing = batch(30, 8)
    def run(strategy):
        return pixmix(images, mixing, severity=3, trace=True, strategy=strategy,
                      generator=torch.Generator().manual_seed(8))
    (g, traces_g), (d, traces_d) = run("grouped"), run("dense")
    assert traces_g == traces_d
    np.testing.assert_allclose(d.numpy(), g.numpy(), rtol=0, atol=1e-5)


def test_stream_safe_cache_builds_once_per_key():
    calls = []

    @stream_safe_cache(maxsize=2)
    def build(size, device):
        calls.append(size)
        return torch.arange(size, device=device), torch.ones(size, device=device)

    first = build(3, torch.device("cpu"))
    assert build(3, torch.device("cpu")) is first and calls == [3]
    build(4, torch.device("cpu"))
    build(5, torch.device("cpu"))  # evicts 3
    build(3, torch.device("cpu"))
    assert calls == [3, 4, 5, 3] and build.cache_info().maxsize == 2


def test_op_log_counts_kernels_and_their_bytes():
    x = torch.zeros(4)
    with OpLog() as log:
        x.add_(1)              # a kernel: reads and writes 16 bytes
        x.view(2, 2)           # metadata only
        torch.empty(3)         # an allocation, no kernel
        torch.arange(64).index_select(0, torch.tensor([1, 2]))  # reads 2 of 64 values
    assert log.kernels() == ["add_", "arange", "index_select"]
    assert log.kernels(min_numel=64) == ["arange", "index_select"]
    assert log.calls[0][2] == 32
    assert log.calls[-1][2] == 16 + 16 + 16  # source read as much as gathered, index, output
