"""Encoders: shapes, channel counts, stems, timm by name, projector."""

import pytest
import torch

from sslkit.encoders.convnet import ConvNet
from sslkit.encoders.projector import MLP
from sslkit.encoders.resnet import ResNet
from sslkit.encoders.timm import TimmEncoder


def test_convnet_features():
    net = ConvNet(1, (8, 16, 32), pool_size=2)
    assert net.num_features == 32 * 4
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 128)


@pytest.mark.parametrize("stem,size,spatial", [(True, 32, 4), (False, 64, 2)])
def test_resnet_stem_and_channels(stem, size, spatial):
    net = ResNet("resnet18", in_chans=1, cifar_stem=stem)
    feats = net.net.layer4(net.net.layer3(net.net.layer2(net.net.layer1(
        net.net.maxpool(net.net.relu(net.net.bn1(net.net.conv1(torch.randn(2, 1, size, size)))))))))
    assert feats.shape[-1] == spatial  # the CIFAR stem keeps 8x more resolution
    assert net(torch.randn(2, 1, size, size)).shape == (2, 512) and net.num_features == 512


def test_unknown_resnet_lists_choices():
    with pytest.raises(ValueError, match="resnet18"):
        ResNet("resnet7")


def test_timm_by_name():
    net = TimmEncoder("resnet10t", in_chans=1)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, net.num_features)
    with pytest.raises(ValueError, match="timm has no model"):
        TimmEncoder("definitely_not_a_model")


def test_projector():
    mlp = MLP(32, 64, 16, layers=2)
    assert mlp(torch.randn(4, 32)).shape == (4, 16) and mlp.out_dim == 16
    assert len(MLP(32, layers=0)) == 0 and MLP(32, layers=0).out_dim == 32
    v3 = MLP(32, 64, 16, layers=3, last_batch_norm=True)
    assert isinstance(v3[-1], torch.nn.BatchNorm1d)


@pytest.mark.parametrize("size,fc6_in", [(32, 192 * 3 * 3), (64, 192 * 7 * 7), (28, 192 * 2 * 2)])
def test_small_alexnet_matches_the_official_layout(size, fc6_in):
    from sslkit.encoders.alexnet import SmallAlexNet

    net = SmallAlexNet(3, size)
    assert net.fc[1][0].in_features == fc6_in  # the official 32 px and 64 px (STL-10) files
    convs = [m for m in net.convs.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 192, 384, 384, 192]
    assert all(c.bias is None for c in convs)
    assert net(torch.randn(2, 3, size, size)).shape == (2, 4096) and net.num_features == 4096
    assert abs(net.fc[2][0].weight.std().item() - 0.02) < 1e-3
    with pytest.raises(ValueError, match="at least 15 px"):
        SmallAlexNet(3, 12)
