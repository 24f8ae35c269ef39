"""PGD (the paper's "Adversaries" column) against an independent step-by-step computation."""
import pytest
import torch
from torch import nn

from dali_pixmix.metrics.adversarial import (
    PGD_EPSILON,
    PGD_STEP_SIZE,
    PGD_STEPS,
    PixelSpaceModel,
    pgd_linf,
    pgd_protocol,
    pgd_start_noise,
)

pytestmark = pytest.mark.unit
HALF = (0.5, 0.5, 0.5)


def tiny_net():
    """Conv-BN-ReLU-Dropout-Linear in float64; BN statistics and dropout make eval mode matter."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Dropout(0.5), nn.Flatten(), nn.Linear(6 * 8 * 8, 5)).double()
    net[1].running_mean.uniform_(-0.3, 0.3)
    net[1].running_var.uniform_(0.5, 2.0)
    return net.train()


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64)
    images[0] = 0.0   # on the edges of [0, 1]: the clipping matters
    images[1] = 1.0
    return images, torch.randint(0, 5, (n,), generator=g)


def independent_pgd(net, x, y, noise, eps, steps, step, centre_on_start):
    """The reference PGD written out: model(2a - 1), summed CE by log-softmax, sign step, and
    projection with torch.where; the ball is centred on the start when `centre_on_start` (the
    reference's in-place `+=` on a detached alias of its clean batch)."""
    net.eval()
    a = x + noise
    centre = a.clone() if centre_on_start else x.clone()
    for _ in range(steps):
        a = a.detach().requires_grad_(True)
        logp = torch.log_softmax(net(2 * a - 1), dim=1)
        loss = -logp[torch.arange(len(y)), y].sum()
        grad = torch.autograd.grad(loss, [a])[0]
        a = a.detach() + step * torch.sign(grad)
        a = torch.where(a > centre + eps, centre + eps, torch.where(a < centre - eps,
                                                                   centre - eps, a))
        a = torch.where(a > 1, torch.ones_like(a), torch.where(a < 0, torch.zeros_like(a), a))
    return a.detach()


@pytest.mark.parametrize("ball", ["clean", "reference"])
@pytest.mark.parametrize("eps,steps,step", [(PGD_EPSILON, PGD_STEPS, PGD_STEP_SIZE),
                                            (8 / 255, 5, 2 / 255)])
def test_equals_an_independent_computation(ball, eps, steps, step):
    net = tiny_net()
    x, y = batch()
    noise = pgd_start_noise(x, eps, torch.Generator().manual_seed(7))
    ours = pgd_linf(PixelSpaceModel(net, HALF, HALF), x, y, epsilon=eps, steps=steps,
                    step_size=step, start_noise=noise, ball=ball)
    expected = independent_pgd(net, x, y, noise, eps, steps, step, ball == "reference")
    assert torch.equal(ours, expected)
    assert not torch.equal(ours, (x + noise).clamp(0, 1))  # the steps moved it


def test_the_reference_start_aliases_its_clean_batch():
    """Why ball='reference' exists: a detached tensor shares storage, so `+=` on it moves the
    tensor it came from, the reference's centre of projection."""
    bx = torch.zeros(3)
    adv = bx.detach()
    adv += torch.ones(3)
    assert torch.equal(bx, torch.ones(3))


def test_perturbation_stays_in_the_ball_and_in_unit_range():
    net = tiny_net()
    x, y = batch(16)
    g = torch.Generator().manual_seed(3)
    adv = pgd_linf(PixelSpaceModel(net, HALF, HALF), x, y, generator=g)
    assert (adv - x).abs().max() <= PGD_EPSILON + 1e-12
    assert adv.min() >= 0 and adv.max() <= 1
    g = torch.Generator().manual_seed(3)
    ref = pgd_linf(PixelSpaceModel(net, HALF, HALF), x, y, generator=g, ball="reference")
    gap = (ref - x).abs().max()
    assert PGD_EPSILON + 1e-9 < gap <= 2 * PGD_EPSILON + 1e-12  # the reference can go past eps


def test_no_parameter_gradients_mode_restored_inputs_untouched():
    net = tiny_net()
    x, y = batch()
    before = x.clone()
    a = pgd_linf(PixelSpaceModel(net, HALF, HALF), x, y, generator=torch.Generator().manual_seed(0))
    b = pgd_linf(PixelSpaceModel(net, HALF, HALF), x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # same generator seed, same attack (dropout stayed off)
    assert net.training
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(x, before) and not a.requires_grad


def test_generator_draws_the_start_noise():
    net = PixelSpaceModel(tiny_net(), HALF, HALF)
    x, y = batch()
    drawn = pgd_linf(net, x, y, generator=torch.Generator().manual_seed(5))
    noise = pgd_start_noise(x, PGD_EPSILON, torch.Generator().manual_seed(5))
    assert noise.abs().max() <= PGD_EPSILON and noise.std() > PGD_EPSILON / 3
    assert torch.equal(drawn, pgd_linf(net, x, y, start_noise=noise))


def test_pixel_space_model_normalises_per_channel():
    seen = []
    model = PixelSpaceModel(lambda t: seen.append(t) or t.flatten(1), (0.1, 0.2, 0.3),
                            (0.5, 0.25, 2.0))
    model(torch.ones(1, 3, 1, 1))
    assert torch.allclose(seen[0].flatten(), torch.tensor([1.8, 3.2, 0.35]))


@pytest.mark.parametrize("kwargs,match", [({"ball": "centre"}, "ball"), ({"steps": 0}, "steps"),
                                          ({"epsilon": -1.0}, "epsilon")])
def test_bad_settings_are_clear_errors(kwargs, match):
    x, y = batch()
    with pytest.raises(ValueError, match=match):
        pgd_linf(PixelSpaceModel(tiny_net(), HALF, HALF), x, y, **kwargs)
    with pytest.raises(ValueError, match="labels"):
        pgd_linf(PixelSpaceModel(tiny_net(), HALF, HALF), x, y[:2])


def test_protocol_names_the_setting():
    assert pgd_protocol() == ("pgd-linf:eps=2/255,steps=20,step=0.5/255,ball=clean,summed-ce,"
                              "random-start")
    assert "ball=reference" in pgd_protocol(ball="reference")


def test_a_fresh_wrapper_leaves_an_evaluated_model_in_eval_mode():
    """The attack restores the mode it found: on a new PixelSpaceModel around a model in eval
    mode that must be eval (a wrapper starting in train mode would switch BatchNorm to batch
    statistics for the next forward, and overwrite its running means)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.rand(2, 3, 8, 8))
    model.eval()
    running = model[1].running_mean.clone()
    wrapped = PixelSpaceModel(model, (0.5,) * 3, (0.5,) * 3)
    pgd_linf(wrapped, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), steps=2,
             generator=torch.Generator().manual_seed(0))
    assert not model.training and not wrapped.training
    model(torch.rand(4, 3, 8, 8))
    assert torch.equal(model[1].running_mean, running)
