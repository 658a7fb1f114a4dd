"""FVD: the NaN paths, and the computed path with a tiny TorchScript stand-in for StyleGAN-V's I3D."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from t2s_ray.metrics.fvd import NO_DETECTOR, frechet_video_distance, fvd, i3d_features, load_i3d, to_uint8_bcthw

B, C, T, H, W = 6, 3, 10, 6, 5

# the fake detector is built the way StyleGAN-V's was: TorchScript, deprecated in recent torch
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")


class FakeI3D(nn.Module):
    """Checks the StyleGAN-V calling convention, then returns a linear projection of per-frame channel means."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(C * T, 8)

    def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
        assert x.dtype == torch.uint8, "detector expects uint8"
        assert x.dim() == 5 and x.shape[1] == 3 and x.shape[2] == 10 and x.shape[3] == 6, "expects (B, C, T, H, W)"
        assert rescale and resize and return_features
        return self.proj(x.float().mean(dim=(3, 4)).flatten(1) / 255.0)


@pytest.fixture
def detector_path(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(FakeI3D()), str(path))
    return str(path)


def _videos(seed, n=B, c=C, t=T):
    return torch.rand(n, c, t, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_to_uint8_maps_range_and_clips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5]).view(1, 1, 5, 1, 1)
    out = to_uint8_bcthw(x)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert out.flatten().tolist() == [0, 0, 128, 255, 255]


def test_load_i3d_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt") as err:
        load_i3d(str(missing))
    assert "i3d_torchscript.pt" in str(err.value) and "eval.fvd_detector" in str(err.value)


def test_no_detector_gives_nan_and_status():
    value, status = fvd(_videos(0), _videos(1), "", "cpu")
    assert math.isnan(value) and status == NO_DETECTOR


def test_missing_detector_file_gives_nan_naming_path(tmp_path):
    value, status = fvd(_videos(0), _videos(1), str(tmp_path / "gone.pt"), "cpu")
    assert math.isnan(value) and "gone.pt" in status


def test_short_clips_give_nan(detector_path):
    value, status = fvd(_videos(0, t=8), _videos(1, t=8), detector_path, "cpu")
    assert math.isnan(value) and status == "I3D needs >= 10 frames, clips have T=8"


def test_single_clip_gives_nan(detector_path):
    value, status = fvd(_videos(0, n=1), _videos(1, n=1), detector_path, "cpu")
    assert math.isnan(value) and ">= 2 clips" in status


def test_mismatched_shapes_raise(detector_path):
    with pytest.raises(ValueError, match="share"):
        fvd(_videos(0), _videos(1, c=1), detector_path, "cpu")


def test_identical_sets_give_zero(detector_path):
    videos = _videos(0)
    value, status = fvd(videos, videos.clone(), detector_path, "cpu")
    assert abs(value) < 1e-6
    assert status == f"ok (N={B} real, {B} fake)"


def test_different_sets_give_positive_distance(detector_path):
    value, status = fvd(_videos(0), (_videos(1) * 0.5 + 0.3), detector_path, "cpu")
    assert value > 0 and status.startswith("ok")


def test_features_are_batched_and_grey_is_repeated(detector_path):
    detector = load_i3d(detector_path)
    rgb = to_uint8_bcthw(_videos(2, n=5, c=1)).repeat(1, 3, 1, 1, 1)
    feats = i3d_features(detector, rgb, batch_size=2)
    assert feats.shape == (5, 8) and feats.dtype == np.float64
    np.testing.assert_allclose(i3d_features(detector, rgb[:, :1], batch_size=4), feats)


def test_features_reject_float_input(detector_path):
    with pytest.raises(TypeError, match="uint8"):
        i3d_features(load_i3d(detector_path), _videos(0))


def test_generic_frechet_video_distance():
    feats = np.random.default_rng(0).normal(size=(20, 4))
    assert abs(frechet_video_distance(feats, feats)) < 1e-9


def test_fvd_of_i3d_features_is_stylegan_v_compute_fvd():
    """StyleGAN-V's `compute_fvd`, line for line (np.cov with its default ddof=1, scipy's sqrtm): published FVDs
    and ours are the same number for the same features."""
    import scipy.linalg

    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 8)), rng.normal(0.3, 1.2, size=(40, 8))
    mu_gen, sigma_gen = fake.mean(axis=0), np.cov(fake, rowvar=False)
    mu_real, sigma_real = real.mean(axis=0), np.cov(real, rowvar=False)
    s, _ = scipy.linalg.sqrtm(np.dot(sigma_gen, sigma_real), disp=False)
    reference = float(np.real(np.square(mu_gen - mu_real).sum() + np.trace(sigma_gen + sigma_real - s * 2)))
    assert frechet_video_distance(real, fake) == pytest.approx(reference, rel=1e-9)
    ddof0 = fake.var(axis=0).sum() + real.var(axis=0).sum()  # the ddof=0 traces differ by a factor 39/40
    assert not math.isclose(ddof0, np.trace(sigma_gen) + np.trace(sigma_real), rel_tol=1e-3)


def test_i3d_fvd_and_kid_share_one_pass_of_features(detector_path):
    from t2s_ray.metrics.fvd import fvd_and_kid

    real, fake = _videos(0), _videos(1) * 0.5 + 0.3
    m = fvd_and_kid(real, fake, detector_path, "cpu")
    assert m["eval/fvd"] == pytest.approx(fvd(real, fake, detector_path, "cpu")[0])
    assert math.isfinite(m["eval/kid"]) and m["eval/kid_sd"] >= 0 and m["eval/kid_status"].startswith("ok")
    three = fvd_and_kid(real[:3], fake[:3], detector_path, "cpu")
    assert math.isnan(three["eval/kid"]) and "KID needs >= 4 clips" in three["eval/kid_status"]
    none = fvd_and_kid(real, fake, "", "cpu")
    assert math.isnan(none["eval/kid"]) and none["eval/kid_status"] == none["eval/fvd_status"]
    assert math.isnan(none["eval/kid_sd"]) and none["eval/kid_sd_status"] == none["eval/fvd_status"]
