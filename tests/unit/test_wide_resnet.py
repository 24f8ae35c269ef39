"""Wide ResNet: the reference architecture (parameter counts, shortcut wiring), its name."""
import pytest
import torch
import torch.nn.functional as F

from dali_pixmix.models import build_model, classifier_head_size
from dali_pixmix.wide_resnet import WideResNet, parse_wide_resnet, wide_resnet

pytestmark = pytest.mark.unit


def wrn_parameter_count(depth, k, classes):
    """Parameters of WRN-depth-k counted layer by layer from the paper's description."""
    n, widths = (depth - 4) // 6, (16, 16 * k, 32 * k, 64 * k)
    total = 3 * 16 * 9
    for stage in range(3):
        for b in range(n):
            cin, cout = (widths[stage] if b == 0 else widths[stage + 1]), widths[stage + 1]
            total += 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9
            total += cin * cout if cin != cout else 0
    return total + 2 * widths[3] + widths[3] * classes + classes


@pytest.mark.parametrize("arch,classes,known", [
    ("wrn40_4", 10, 8_949_210),     # "8.9M" (PixMix / AugMix papers)
    ("wrn28_10", 10, 36_479_194),   # "36.5M" (WRN paper, Table 4)
    ("wrn40_2", 10, 2_243_546),     # "2.2M" (AugMix's CIFAR model)
    ("wrn40_4", 100, None),
])
def test_parameter_counts_match_the_published_architecture(arch, classes, known):
    model = build_model(arch, classes)
    count = sum(p.numel() for p in model.parameters())
    depth, k = parse_wide_resnet(arch)
    assert count == wrn_parameter_count(depth, k, classes)
    if known is not None:
        assert count == known


def test_names_dropout_and_head():
    model = build_model("wrn40_4", 100)
    assert isinstance(model, WideResNet)
    assert model.block1.layer[0].drop_rate == 0.3
    assert classifier_head_size(model.state_dict()) == 100
    keys = model.state_dict().keys()
    # the reference's module names: its checkpoints load after stripping 'module.'
    assert {"conv1.weight", "block1.layer.0.conv_shortcut.weight", "block3.layer.5.conv2.weight",
            "bn1.running_mean", "fc.weight"} <= set(keys)
    assert "block1.layer.1.conv_shortcut.weight" not in keys
    assert parse_wide_resnet("resnet50") is None and parse_wide_resnet("wrn40_4x") is None


@pytest.mark.parametrize("arch", ["wrn41_4", "wrn4_1", "wrn40_0"])
def test_bad_shapes_are_clear_errors(arch):
    with pytest.raises(ValueError, match="6n \\+ 4|widen factor"):
        build_model(arch, 10)
    with pytest.raises(ValueError, match="wrn40_4"):
        build_model("wideresnet", 10)


def reference_forward(model, x):
    """The reference's forward pass written with torch.nn.functional on the model's weights."""
    def bn(m, t):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0,
                            m.eps)

    out = F.conv2d(x, model.conv1.weight, padding=1)
    for stage in (model.block1, model.block2, model.block3):
        for block in stage.layer:
            stride = block.conv1.stride
            act = F.relu(bn(block.bn1, out))
            inner = F.relu(bn(block.bn2, F.conv2d(act, block.conv1.weight, stride=stride,
                                                  padding=1)))
            inner = F.conv2d(inner, block.conv2.weight, padding=1)
            if block.conv_shortcut is not None:  # width change: 1x1 conv of the activated input
                out = F.conv2d(act, block.conv_shortcut.weight, stride=stride) + inner
            else:
                out = out + inner
    out = F.relu(bn(model.bn1, out))
    return F.linear(F.avg_pool2d(out, 8).flatten(1), model.fc.weight, model.fc.bias)


def test_forward_equals_the_reference_computation():
    torch.manual_seed(0)
    model = wide_resnet("wrn16_2", 7, drop_rate=0.3).double()
    for m in model.modules():  # non-trivial BN statistics so a misplaced BN would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    model.eval()
    torch.testing.assert_close(model(x), reference_forward(model, x), rtol=1e-10, atol=1e-10)
    model.train()  # dropout is active in training
    assert not torch.allclose(model(x), model(x))


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    model = wide_resnet("wrn28_10", 10)
    w = model.block3.layer[0].conv2.weight  # 640 x 640 x 3 x 3: std sqrt(2 / (9 * 640))
    assert abs(w.std().item() - (2 / (9 * 640)) ** 0.5) < 0.01 * (2 / (9 * 640)) ** 0.5
    assert torch.all(model.fc.bias == 0) and torch.all(model.bn1.weight == 1)


def test_checkpoint_round_trip_by_arch_name(tmp_path):
    from dali_pixmix.models import load_classifier

    model = build_model("wrn16_2", 4).eval()
    path = tmp_path / "wrn.pt"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()},
                "arch": "wrn16_2", "classes": list("abcd")}, path)
    loaded, classes = load_classifier(path)
    x = torch.rand(2, 3, 32, 32)
    assert classes == list("abcd") and not loaded.training
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="holds a wrn16_2, not a wrn16_4: pass --arch wrn16_2"):
        load_classifier(path, arch="wrn16_4")


def test_a_wide_resnet_file_without_its_architecture_is_named_from_its_tensors(tmp_path):
    """A checkpoint that does not record its architecture, loaded as a ResNet: the message
    names the Wide ResNet whose depth and width the tensors have, not 'a foreign checkpoint'."""
    from dali_pixmix.models import guess_arch, load_classifier

    for name in ("wrn16_2", "wrn22_1", "wrn40_4"):
        assert guess_arch(build_model(name, 10).state_dict(), 10) == name
    assert guess_arch(build_model("resnet18", 10).state_dict(), 10) == "resnet18"
    state = build_model("wrn16_2", 10).state_dict()
    del state["block3.layer.1.bn2.running_mean"]  # a damaged file is no Wide ResNet
    assert guess_arch(state, 10) is None
    path = tmp_path / "plain.pt"
    torch.save({"model": build_model("wrn22_1", 10).state_dict(), "classes": list("abcdefghij")},
               path)
    with pytest.raises(ValueError, match="holds a wrn22_1, not a resnet18: pass --arch wrn22_1 "
                                         r"\(the file does not record its architecture\)"):
        load_classifier(path, arch="resnet18")
