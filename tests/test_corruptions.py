"""ImageNet-C-style corruptions: shape/range, determinism, severity ordering, the transform."""
import pytest

torch = pytest.importorskip("torch")

from audit.corruptions import (  # noqa: E402
    SEVERITIES, Corruption, corrupt, corruption_seed, list_corruptions,
)
from audit.errors import UserError  # noqa: E402

NAMES = list_corruptions()


def scene(size=48, seed=0):
    """A small natural-ish image: gradients, flat discs with edges, faint texture."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    img = torch.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 + 0.3 * torch.sin(6 * xx + seed)])
    for _ in range(6):
        cx, cy, r = torch.rand(3, generator=g).tolist()
        color = torch.rand(3, 1, 1, generator=g)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < (0.05 + 0.2 * r) ** 2
        img = torch.where(mask, color.expand_as(img), img)
    return (img + 0.03 * torch.rand(img.shape, generator=g)).clamp(0, 1)


def test_the_fifteen_imagenet_c_corruptions_in_its_order():
    assert NAMES == ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                     "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                     "elastic_transform", "pixelate", "jpeg_compression"]


@pytest.mark.parametrize("name", NAMES)
def test_shape_range_and_change(name):
    x = scene(52)[:, :, :48]      # non-square; 48 px: the world's images are 64 px
    for s in SEVERITIES:
        y = corrupt(x, name, s, seed=1)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert float(((y - x) ** 2).mean()) > 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(name):
    x = scene(32)
    a = corrupt(x, name, 3, seed=7)
    assert torch.equal(a, corrupt(x, name, 3, seed=7))
    if name in {"gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "fog", "glass_blur",
                "snow", "frost", "elastic_transform"}:
        assert not torch.equal(a, corrupt(x, name, 3, seed=8))   # random ones use the seed


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [32, 96])
def test_distortion_grows_with_severity(name, size):
    """Mean squared error to the clean image, summed over three images, rises at every step."""
    mse = [sum(float(((corrupt(scene(size, k), name, s, seed=k) - scene(size, k)) ** 2).mean())
               for k in range(3)) for s in SEVERITIES]
    assert all(a < b for a, b in zip(mse, mse[1:])), mse


def test_noise_strength_matches_imagenet_c():
    x = torch.full((3, 64, 64), 0.5)
    sd = [float((corrupt(x, "gaussian_noise", s, seed=0) - x).std()) for s in (1, 3)]
    assert sd[0] == pytest.approx(0.08, rel=0.05) and sd[1] == pytest.approx(0.18, rel=0.05)
    frac = float((corrupt(x, "impulse_noise", 5, seed=0) != x).float().mean())
    assert frac == pytest.approx(0.27, abs=0.02)


def test_contrast_and_brightness_by_hand():
    x = scene(16)
    mean = x.mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(corrupt(x, "contrast", 1, seed=0), ((x - mean) * 0.4 + mean).clamp(0, 1))
    grey = torch.full((3, 4, 4), 0.3)                # V = 0.3 -> 0.3 + 0.5 at severity 5
    assert torch.allclose(corrupt(grey, "brightness", 5, seed=0), torch.full((3, 4, 4), 0.8))


def test_seed_is_stable_and_ignores_severity():
    assert corruption_seed(0, "abc", "fog") == corruption_seed(0, "abc", "fog")
    assert corruption_seed(0, "abc", "fog") != corruption_seed(1, "abc", "fog")
    assert 0 <= corruption_seed(5, "x", "pixelate") < 2 ** 63


def test_transform_round_trips_pil_and_keys_by_content():
    from PIL import Image
    from torchvision.transforms.functional import to_pil_image
    img = to_pil_image((scene(32) * 255).byte())
    t = Corruption("gaussian_noise", 2, seed=3)
    out = t(img, 0)
    assert isinstance(out, Image.Image) and out.size == img.size and out.mode == "RGB"
    # the same pixels give the same corruption at any index: the embed cache stays exact
    assert out.tobytes() == t(img, 99).tobytes()
    keys = {Corruption(n, s, seed=0).key for n in NAMES for s in SEVERITIES}
    assert len(keys) == len(NAMES) * 5 and Corruption("fog", 1, seed=1).key not in keys


def test_bad_name_or_severity_is_a_user_error():
    with pytest.raises(UserError, match="unknown"):
        Corruption("spatter", 1)       # one of ImageNet-C's four held-out validation corruptions
    with pytest.raises(UserError, match="severity"):
        corrupt(scene(8), "fog", 6, seed=0)


def test_zoom_blur_by_hand():
    """Deterministic: the mean of the image and its centre zoomed by 1.00 .. 1.10 (severity 1);
    a flat image stays flat and the centre pixel of an odd-sized image stays put."""
    flat = torch.full((3, 9, 9), 0.4)
    assert torch.allclose(corrupt(flat, "zoom_blur", 5, seed=0), flat, atol=1e-6)
    x = scene(33)
    y = corrupt(x, "zoom_blur", 1, seed=0)
    assert torch.allclose(y[:, 16, 16], x[:, 16, 16], atol=1e-5)
    assert torch.equal(y, corrupt(x, "zoom_blur", 1, seed=9))       # no randomness


def test_frost_is_a_weighted_sum_of_image_and_one_texture():
    """ImageNet-C's frost: a * x + b * texture. With the same seed, the texture is the same at
    every severity: recover it from a black image at severity 1 (b = 0.4), check severity 5."""
    black = torch.zeros(3, 40, 40)
    tex = corrupt(black, "frost", 1, seed=4) / 0.4
    x = scene(40)
    assert torch.allclose(corrupt(x, "frost", 5, seed=4), (0.6 * x + 0.75 * tex).clamp(0, 1), atol=1e-5)
    assert float(tex.mean()) == pytest.approx(0.2 * (0.85 + 0.93 + 1.0) / 3, rel=0.02)


def test_snow_and_frost_cover_the_same_share_at_any_size():
    """Their layers are drawn for the 224 px scale: a 32 and a 96 px copy of one scene change
    about equally (mean squared change within a factor 1.5). Not for warps: a sub-pixel shift
    changes a small image's pixels less than the same shift, relative to content, a big one's."""
    for name in ("snow", "frost"):
        small, big = (float(((corrupt(scene(n), name, 4, seed=2) - scene(n)) ** 2).mean()) for n in (32, 96))
        assert 1 / 1.5 < small / big < 1.5, (name, small, big)
