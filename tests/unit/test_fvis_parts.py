"""Feature visualisation building blocks against hand-computed values."""
import math

import pytest
import torch
import torchvision

from dali_pixmix.mixing import fvis

pytestmark = pytest.mark.unit


def test_redirected_relu_passes_only_raising_gradient_where_a_picture_is_blocked():
    x = torch.tensor([[[-1.0, 2.0, -3.0]],     # picture 0: one positive input, normal ReLU
                      [[-1.0, -2.0, -3.0]]],   # picture 1: all negative, ReLU blocks everything
                     requires_grad=True)
    grad = torch.tensor([[[-5.0, 7.0, -11.0]], [[-5.0, 7.0, -11.0]]])
    fvis.RedirectedReLU.apply(x).backward(grad)
    # Picture 0: ordinary ReLU gradient. Picture 1: negative gradients (descent raises x) pass,
    # the positive one (would push an already negative input lower) is dropped.
    assert x.grad.tolist() == [[[0.0, 7.0, 0.0]], [[-5.0, 0.0, -11.0]]]
    assert torch.equal(fvis.RedirectedReLU.apply(x.detach()), x.detach().clamp(min=0))


def test_redirected_relus_are_removed_afterwards():
    model = torchvision.models.resnet18(num_classes=4).eval()
    with fvis.redirected_relus(model):
        assert not model.relu.inplace and model.relu._forward_hooks
    assert model.relu.inplace and not model.relu._forward_hooks


def test_affine_theta_copies_shifts_zooms_and_rotates_as_computed_by_hand():
    img = torch.rand(1, 3, 16, 16)
    out = fvis.transform(img, torch.tensor([fvis.affine_theta((0, 0), 1.0, 0.0, 16, 28)]), 28)
    assert torch.allclose(out[..., 6:22, 6:22], img, atol=1e-5)  # margin 6 px each side
    border = torch.cat([out[..., :6, :].flatten(), out[..., 22:, :].flatten(),
                        out[..., :, :6].flatten(), out[..., :, 22:].flatten()])
    assert torch.allclose(border, torch.full_like(border, 0.5))  # outside the picture: grey
    shifted = fvis.transform(img, torch.tensor([fvis.affine_theta((3, -2), 1.0, 0.0, 16, 28)]), 28)
    # Output pixel (y, x) shows picture pixel (y - 6 + shift_y, x - 6 + shift_x).
    assert torch.allclose(shifted[..., 8:22, 3:19], img[..., 0:14, 0:16], atol=1e-5)
    rotated = fvis.transform(img, torch.tensor([fvis.affine_theta((0, 0), 1.0, 90.0, 16, 16)]), 16)
    assert torch.allclose(rotated, torch.rot90(img, k=1, dims=(2, 3)), atol=1e-5)
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 3, 16, 16) / 16
    zoomed = fvis.transform(ramp, torch.tensor([fvis.affine_theta((0, 0), 2.0, 0.0, 16, 16)]), 16)
    steps = zoomed[0, 0, 8, 5:11].diff()
    assert torch.allclose(steps, torch.full_like(steps, 0.5 / 16), atol=1e-5)  # 2x magnified


def test_fourier_scale_is_one_over_frequency_clamped_at_the_lowest():
    scale = fvis.fourier_scale(8)
    assert scale.shape == (8, 5)
    assert scale[0, 0] == pytest.approx(8.0)          # DC: frequency clamped to 1/size
    assert scale[0, 1] == pytest.approx(8.0)          # frequency 1/8
    assert scale[2, 1] == pytest.approx(1 / math.hypot(2 / 8, 1 / 8))
    assert scale[0, 4] == pytest.approx(2.0)          # Nyquist 1/2


def test_zero_spectrum_is_mid_grey_and_colours_stay_in_range():
    grey = fvis.spectra_to_rgb(torch.zeros(2, 3, 16, 9, 2), fvis.fourier_scale(16))
    assert grey.shape == (2, 3, 16, 16) and torch.allclose(grey, torch.full_like(grey, 0.5))
    loud = fvis.spectra_to_rgb(torch.randn(2, 3, 16, 9, 2) * 50, fvis.fourier_scale(16))
    assert loud.min() >= 0 and loud.max() <= 1 and loud.std() > 0.1


def test_probe_reads_layers_before_in_place_operations_change_them():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected_bn1 = model.bn1(model.conv1(x))  # negative values the in-place ReLU would zero
        expected_layer1 = model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))
        out = fvis.LayerProbe(model, fvis.resolve_layers(model, ["bn1", "layer1"]))(x)
    assert (expected_bn1 < 0).any()
    assert torch.allclose(out["bn1"], expected_bn1, atol=1e-6)
    assert torch.allclose(out["layer1"], expected_layer1, atol=1e-6)


def test_affine_layers_are_the_ones_without_a_nonlinearity_before_them():
    model = torchvision.models.resnet18(num_classes=4).eval()
    names = ["conv1", "bn1", "relu", "layer1", "layer1.0.conv1"]
    assert fvis.affine_layers(model, fvis.resolve_layers(model, names), "cpu") == ["conv1", "bn1"]


def test_unknown_layers_and_channel_counts_name_the_valid_choices():
    model = torchvision.models.resnet18(num_classes=4).eval()
    with pytest.raises(ValueError, match="unknown layer 'layer9'; valid layers: conv1, bn1, relu"):
        fvis.resolve_layers(model, ["layer1", "layer9"])
    counts = fvis.channel_counts(model, fvis.resolve_layers(model, ["relu", "layer2"]), "cpu")
    assert counts == {"relu": 64, "layer2": 128}
    assert fvis.plan(counts, 2) == [("relu", 0), ("relu", 1), ("layer2", 0), ("layer2", 1)]
    with pytest.raises(ValueError, match="layer 'relu' has 64 channels"):
        fvis.plan(counts, 100)


def test_picture_draws_depend_only_on_seed_layer_and_channel():
    def draws(seed, layer, channel):
        return torch.rand(4, generator=fvis.picture_generator(seed, layer, channel))

    assert torch.equal(draws(0, "layer1", 3), draws(0, "layer1", 3))
    assert not torch.equal(draws(0, "layer1", 3), draws(0, "layer1", 4))
    assert not torch.equal(draws(0, "layer1", 3), draws(0, "layer2", 3))
    assert not torch.equal(draws(0, "layer1", 3), draws(1, "layer1", 3))
