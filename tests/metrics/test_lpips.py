"""LPIPS on video clips with a random trunk (no download ever), and the not-cached path."""

import socket

import lpips as lpips_pkg
import pytest
import torch
import torchvision

from t2s_ray.metrics.lpips import BACKBONE_FILES, load_lpips, lpips_backbone_file, lpips_video


def _refuse(*args, **kwargs):
    raise AssertionError("network access attempted")


@pytest.fixture
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse)


@pytest.fixture(scope="module")
def model():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _refuse)
        mp.setattr(torch.hub, "download_url_to_file", _refuse)
        torch.manual_seed(0)
        net, status = load_lpips("alex", random_backbone=True)
    assert "not LPIPS" in status
    return net


def _clips(seed, shape=(2, 3, 3, 16, 16)):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_model_is_frozen_and_in_eval_mode(model):
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_same_clips_give_zero(model):
    x = _clips(0)
    assert lpips_video(model, x, x.clone()) == pytest.approx(0.0, abs=1e-7)


def test_different_clips_positive_and_symmetric(model):
    a, b = _clips(0), _clips(1)
    ab, ba = lpips_video(model, a, b), lpips_video(model, b, a)
    assert ab > 0
    assert ab == pytest.approx(ba, rel=1e-4)


def test_batching_does_not_change_the_value(model):
    a, b = _clips(0), _clips(1)
    assert lpips_video(model, a, b, batch_frames=2) == pytest.approx(lpips_video(model, a, b), rel=1e-5)


def test_grey_clips_are_accepted(model):
    a, b = _clips(0, (1, 1, 2, 8, 8)), _clips(1, (1, 1, 2, 8, 8))
    assert lpips_video(model, a, b) > 0


def test_shape_mismatch_raises(model):
    with pytest.raises(ValueError, match="equal shape"):
        lpips_video(model, _clips(0), _clips(1, (2, 3, 4, 16, 16)))


def test_not_cached_returns_none_without_constructing(monkeypatch, tmp_path, no_network):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(lpips_pkg, "LPIPS", _refuse)
    net, status = load_lpips("alex")
    assert net is None
    assert "alexnet-owt-7be5be79.pth" in status and str(tmp_path / "checkpoints") in status


def test_cached_backbone_is_used_offline(monkeypatch, tmp_path, no_network):
    # squeezenet's state dict is ~5 MB, small enough to place in a fake hub cache
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    trunk = torchvision.models.squeezenet1_1(weights=None)
    path = lpips_backbone_file("squeeze")
    path.parent.mkdir(parents=True)
    torch.save(trunk.state_dict(), path)
    net, status = load_lpips("squeeze")
    assert status == "ok"
    torch.testing.assert_close(net.net.slice1[0].weight, trunk.features[0].weight)


def test_backbone_file_names():
    assert lpips_backbone_file("vgg").name == BACKBONE_FILES["vgg"] == "vgg16-397923af.pth"
    assert lpips_backbone_file().parent.name == "checkpoints"
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        lpips_backbone_file("resnet")
