"""ImageNet-C's 15 corruptions (Hendrycks & Dietterich 2019) on float tensors.

Every corruption is `fn(x, severity, gen) -> x'` with `x` a (C, H, W) float tensor in [0, 1],
`severity` 1..5 and `gen` a seeded `torch.Generator`. Parameters are ImageNet-C's
(imagenet_c/corruptions.py of hendrycks/robustness), which were chosen for 224 px images;
spatial ones (blur radii, fog scale, snow flakes, elastic warps) are scaled by min(H, W) / 224 so
a small world image is corrupted as much, relative to its content, as a 224 px photo. Where a
parameter is not ImageNet-C's, its comment says why (fog, elastic: an order of strength; frost:
a synthesised texture instead of ImageNet-C's photos of frost). Every one grows in strength at
every severity step (tests/test_corruptions.py).

`Corruption(name, severity, seed=...)` wraps one of them as an `ImageTransform` for
`Embedder.images(source, transform=...)`: PIL -> tensor -> corrupt -> PIL.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import math

from audit.errors import UserError

SEVERITIES = (1, 2, 3, 4, 5)

# ImageNet-C parameters, one per severity (imagenet_c/corruptions.py).
_GAUSSIAN = (0.08, 0.12, 0.18, 0.26, 0.38)
_SHOT = (60, 25, 12, 5, 3)
_IMPULSE = (0.03, 0.06, 0.09, 0.17, 0.27)
_DEFOCUS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))       # disk radius, alias sigma
_MOTION = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))             # radius, sigma
_JPEG = (25, 18, 15, 10, 7)                                           # quality
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)                                # downscale factor
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
# Fog as haze (Koschmieder's model) over a fractal depth map: density beta per severity. ImageNet-C
# adds a plasma fractal whose strength saturates (2.5 at both severities 3 and 4), leaving the
# order of the top severities to chance; here every pixel hazes more at every step.
_FOG = (0.3, 0.5, 0.75, 1.05, 1.4)
_FOG_DECAY = 1.7        # fractal octave decay (ImageNet-C uses 1.4..2.0)
_AIRLIGHT = 0.85        # haze colour, light grey
_GLASS = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # sigma, max shift, passes
_ZOOM = ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))  # np.arange(1, end, step)
# loc, scale, zoom, threshold, streak radius, streak sigma, image weight
_SNOW = ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
         (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
         (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
_FROST_MEAN = 0.2     # the synthesised frost texture's mean brightness (_frost_texture)
_FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))     # image, frost weight
# Elastic (alpha, sigma, affine shift) in 224 px units. Severities 3-5 are ImageNet-C's. Its
# severities 1-2 are large smooth affine warps (24 and 49 px) that move pixels further than its
# 3-5 yet cost AlexNet less than 3 (52.6, 70.1 vs 55.7% error): not an order of strength. Here 1-2
# continue the 3-5 regime downwards, so every step warps more; the AlexNet CE baseline (summed
# over severities) is ImageNet-C's, so elastic's CE compares with the literature only roughly.
_ELASTIC = ((244 * 0.03, 244 * 0.01, 244 * 0.01), (244 * 0.04, 244 * 0.01, 244 * 0.015),
            (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
            (244 * 0.12, 244 * 0.01, 244 * 0.02))


def _scale(x) -> float:
    return min(x.shape[-2:]) / 224.0


def gaussian_noise(x, severity, gen):
    import torch
    c = _GAUSSIAN[severity - 1]
    return (x + c * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def shot_noise(x, severity, gen):
    import torch
    c = _SHOT[severity - 1]
    return (torch.poisson(x * c, generator=gen) / c).clamp(0, 1)


def impulse_noise(x, severity, gen):
    import torch
    amount = _IMPULSE[severity - 1]
    u = torch.rand(x.shape, generator=gen)
    # salt and pepper in equal parts, per channel value (skimage's 's&p' mode)
    out = torch.where(u < amount / 2, torch.zeros_like(x), x)
    return torch.where((u >= amount / 2) & (u < amount), torch.ones_like(x), out)


def _convolve(x, kernel):
    """Per-channel 2-D convolution with reflect padding (keeps the border from darkening)."""
    import torch.nn.functional as F
    k = kernel.shape[-1] // 2
    c = x.shape[0]
    pad_mode = "reflect" if k < min(x.shape[-2:]) else "replicate"
    padded = F.pad(x[None], (k, k, k, k), mode=pad_mode)
    weight = kernel.to(x.dtype)[None, None].expand(c, 1, -1, -1)
    return F.conv2d(padded, weight, groups=c)[0]


def _gaussian_kernel(sigma):
    import torch
    k = max(1, math.ceil(3 * sigma))
    t = torch.arange(-k, k + 1, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g2 = g[:, None] * g[None, :]
    return g2 / g2.sum()


def _disk_kernel(radius):
    """Anti-aliased disk: weight falls off over one pixel at the rim, so the blur grows
    continuously with the radius even below one pixel (small images)."""
    import torch
    k = max(1, math.ceil(radius))
    t = torch.arange(-k, k + 1, dtype=torch.float32)
    dist = (t[:, None] ** 2 + t[None, :] ** 2).sqrt()
    w = (radius + 0.5 - dist).clamp(0, 1)
    return w / w.sum()


def defocus_blur(x, severity, gen):
    radius, alias = _DEFOCUS[severity - 1]
    s = _scale(x)
    out = _convolve(x, _disk_kernel(radius * s))
    return _convolve(out, _gaussian_kernel(max(alias * s, 0.05))).clamp(0, 1)


def _motion_kernel(radius, sigma, angle):
    """One-sided Gaussian streak (ImageMagick's motion blur) along `angle` radians."""
    import torch
    k = max(1, math.ceil(radius))
    t = torch.arange(-k, k + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(t, t, indexing="ij")
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = (-dx * math.sin(angle) + dy * math.cos(angle)).abs()
    w = torch.exp(-along ** 2 / (2 * sigma ** 2)) * (1 - across).clamp(min=0)
    w = torch.where(along >= -0.5, w, torch.zeros_like(w))
    return w / w.sum()


def motion_blur(x, severity, gen):
    import torch
    radius, sigma = _MOTION[severity - 1]
    s = _scale(x)
    angle = math.radians(float(torch.empty(1).uniform_(-45, 45, generator=gen)))
    kernel = _motion_kernel(radius * s, max(sigma * s, 0.3), angle)
    return _convolve(x, kernel).clamp(0, 1)


def jpeg_compression(x, severity, gen):
    # PIL rather than torchvision.io, whose image codecs are deprecated since 0.29
    import io

    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, to_pil_image
    buf = io.BytesIO()
    to_pil_image((x * 255).round().clamp(0, 255).byte()).save(buf, "JPEG", quality=_JPEG[severity - 1])
    return pil_to_tensor(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).float() / 255


def pixelate(x, severity, gen):
    import torch.nn.functional as F
    h, w = x.shape[-2:]
    c = _PIXELATE[severity - 1]
    size = (max(1, round(h * c)), max(1, round(w * c)))
    # antialiased bilinear ~ PIL's BOX; "area" aliases at non-integer factors
    small = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    # "nearest-exact" centres the blocks; plain "nearest" shifts them by up to a block at
    # non-integer factors, which made severity 1 (0.6) look worse than severity 2 (0.5)
    return F.interpolate(small, size=(h, w), mode="nearest-exact")[0]


def contrast(x, severity, gen):
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * _CONTRAST[severity - 1] + mean).clamp(0, 1)


def brightness(x, severity, gen):
    """Add c to HSV value, hue and saturation fixed: RGB scales by (V + c) / V."""
    import torch
    c = _BRIGHTNESS[severity - 1]
    v = x.max(dim=0, keepdim=True).values
    new_v = (v + c).clamp(max=1)
    scaled = x * new_v / v.clamp(min=1e-8)
    return torch.where(v > 0, scaled, new_v.expand_as(x)).clamp(0, 1)


def _fractal_noise(h, w, decay, gen):
    """Plasma-like fractal in [0, 1]: octaves of upsampled uniform noise, amplitude / decay
    per octave (ImageNet-C's diamond-square plasma with its `wibbledecay`)."""
    import torch
    import torch.nn.functional as F
    size = max(h, w)
    total = torch.zeros(1, 1, h, w)
    amp, res = 1.0, 2
    while res <= 2 * size:
        grid = torch.rand(1, 1, res, res, generator=gen)
        total += amp * F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        amp /= decay
        res *= 2
    total -= total.min()
    return (total / total.max().clamp(min=1e-8))[0, 0]


def fog(x, severity, gen):
    import torch
    depth = 0.5 + _fractal_noise(x.shape[-2], x.shape[-1], _FOG_DECAY, gen)
    transmission = torch.exp(-_FOG[severity - 1] * depth)
    return (x * transmission + _AIRLIGHT * (1 - transmission)).clamp(0, 1)


# -- resampling helpers (glass, zoom, elastic) ---------------------------------------------

def _sample(x, py, px):
    """x (C, H, W) read at fractional pixel rows py and columns px (H, W), bilinear, mirrored
    at the border (ImageNet-C's map_coordinates(mode='reflect'))."""
    import torch
    import torch.nn.functional as F
    h, w = x.shape[-2:]
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], dim=-1)[None]
    return F.grid_sample(x[None], grid.to(x.dtype), mode="bilinear", padding_mode="reflection",
                         align_corners=False)[0]


def _pixel_grid(h, w):
    import torch
    return torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                          indexing="ij")


def _at_224(x) -> tuple[int, int]:
    """The (H, W) of this image at ImageNet-C's 224 px scale: where per-pixel noise is drawn."""
    s = _scale(x)
    return max(1, round(x.shape[-2] / s)), max(1, round(x.shape[-1] / s))


def _resize(layer, size):
    import torch.nn.functional as F
    return F.interpolate(layer[None, None], size=size, mode="bilinear", antialias=True,
                         align_corners=False)[0, 0]


def glass_blur(x, severity, gen):
    """Blur, shuffle pixels locally, blur. ImageNet-C swaps each pixel with one up to `max shift`
    away, pixel by pixel in a Python loop (seconds per image); here every pixel reads the blurred
    image at a shift drawn uniformly within +-max shift (scaled), all at once, per pass."""
    import torch
    sigma, delta, passes = _GLASS[severity - 1]
    s = _scale(x)
    blur = _gaussian_kernel(max(sigma * s, 0.05))
    out = _convolve(x, blur)
    py, px = _pixel_grid(*x.shape[-2:])
    shifts = torch.rand((3, 2, *x.shape[-2:]), generator=gen) * 2 - 1   # the same draws at every severity
    for k in range(passes):
        out = _sample(out, py + delta * s * shifts[k, 0], px + delta * s * shifts[k, 1])
    return _convolve(out, blur).clamp(0, 1)


def zoom_blur(x, severity, gen):
    """The mean of the image and its centre zoomed by each factor 1, 1 + step, ... < end."""
    import torch
    import torch.nn.functional as F
    end, step = _ZOOM[severity - 1]
    factors = torch.arange(1, end, step, dtype=torch.float64).float()
    theta = torch.zeros(len(factors), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factors
    grid = F.affine_grid(theta, (len(factors), *x.shape), align_corners=False)
    zoomed = F.grid_sample(x[None].expand(len(factors), -1, -1, -1), grid, mode="bilinear",
                           padding_mode="border", align_corners=False)
    return ((x + zoomed.sum(0)) / (len(factors) + 1)).clamp(0, 1)


def snow(x, severity, gen):
    """ImageNet-C's snow: a thresholded, zoomed noise layer (drawn at 224 px scale, then resized
    to the image) streaked by motion blur at a random angle, over an image brightened toward
    grey * 1.5 + 0.5; the layer is added twice, once turned by 180 degrees."""
    import torch
    loc, spread, zoom, threshold, radius, sigma, keep = _SNOW[severity - 1]
    h, w = _at_224(x)
    noise = torch.randn((h, w), generator=gen) * spread + loc
    ch, cw = max(1, math.ceil(h / zoom)), max(1, math.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2      # the centre crop, zoomed back up (clipped_zoom)
    layer = _resize(noise[top:top + ch, left:left + cw], (h, w))
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = _resize(layer, tuple(x.shape[-2:]))
    s = _scale(x)
    angle = math.radians(float(torch.empty(1).uniform_(-135, -45, generator=gen)))
    layer = _convolve(layer[None], _motion_kernel(radius * s, max(sigma * s, 0.3), angle))[0]
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]) if x.shape[0] == 3 else x.mean(0)
    lit = keep * x + (1 - keep) * torch.maximum(x, grey * 1.5 + 0.5)
    return (lit + layer + layer.flip(-1, -2)).clamp(0, 1)


def _frost_texture(c, h, w, s, gen):
    """A seeded stand-in for ImageNet-C's photos of frost (which it crops at random): a dim,
    cloudy fractal film with bright needle crystals (sparse seeds streaked along three random
    directions), bluish white, mostly dark with bright needles as frost on a dark pane. Its
    mean is fixed (_FROST_MEAN): the weights then order the severities (a brighter film would
    make severity 4, which only dims the image, look closer to the clean image than 3)."""
    import torch
    film = _fractal_noise(h, w, 1.6, gen)
    # needles a fixed share of the area at any size: fewer seeds where each streak is longer
    seeds = (torch.rand((h, w), generator=gen) < 0.012 / max(s, 0.1)).float()
    needles = torch.zeros(h, w)
    for angle in (torch.rand(3, generator=gen) * math.pi).tolist():
        needles += _convolve(seeds[None], _motion_kernel(max(9 * s, 1.0), max(4 * s, 0.5), angle))[0]
    tex = 0.3 * film + (needles / needles.max().clamp(min=1e-8)).sqrt()
    tex = (tex * _FROST_MEAN / tex.mean().clamp(min=1e-8)).clamp(0, 1)
    tint = torch.tensor([0.85, 0.93, 1.0] if c == 3 else [0.93] * c)[:, None, None]
    return tex[None] * tint


def frost(x, severity, gen):
    image, weight = _FROST[severity - 1]
    tex = _frost_texture(x.shape[0], *x.shape[-2:], _scale(x), gen)
    return (image * x + weight * tex).clamp(0, 1)


def _smoothed_field(h, w, sigma, gen):
    """Uniform(-1, 1) noise smoothed by a Gaussian of `sigma` pixels (truncated at 3 sigma),
    as two 1-D passes: the field is drawn at 224 px scale, where a 2-D kernel costs 8 ms."""
    import torch
    import torch.nn.functional as F
    k = max(1, math.ceil(3 * sigma))
    t = torch.arange(-k, k + 1, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    field = (torch.rand((1, 1, h, w), generator=gen) * 2 - 1)
    mode = "reflect" if k < min(h, w) else "replicate"
    field = F.conv2d(F.pad(field, (k, k, 0, 0), mode=mode), g.view(1, 1, 1, -1))
    return F.conv2d(F.pad(field, (0, 0, k, k), mode=mode), g.view(1, 1, -1, 1))[0, 0]


def elastic_transform(x, severity, gen):
    """ImageNet-C's elastic warp: a random affine (three points moved by up to `affine` px) and
    a smooth random displacement field (alpha x smoothed noise), both in 224 px units: drawn at
    224 px scale and shrunk with the image, so the warp is the same relative to its content."""
    import torch
    alpha, sigma, shift = _ELASTIC[severity - 1]
    s = _scale(x)
    h, w = x.shape[-2:]
    moved = (torch.rand((3, 2), generator=gen) * 2 - 1) * shift * s
    h224, w224 = _at_224(x)
    fields = [_resize(_smoothed_field(h224, w224, sigma, gen) * alpha * s, (h, w)) for _ in range(2)]
    py, px = _pixel_grid(h, w)
    ay, ax = _affine(h, w, moved, py + fields[1], px + fields[0])
    return _sample(x, ay, ax).clamp(0, 1)


def _affine(h, w, moved, py, px):
    """The affine map taking ImageNet-C's three points (centre +- a third of the side) to
    themselves plus `moved`, applied to the coordinates (py, px)."""
    import torch
    cy, cx, side = h // 2, w // 2, min(h, w) // 3
    src = torch.tensor([[cy + side, cx + side], [cy + side, cx - side], [cy - side, cx - side]],
                       dtype=torch.float32)
    dst = src + moved
    coef = torch.linalg.solve(torch.cat([src, torch.ones(3, 1)], 1), dst)     # (3, 2): [A; t]
    return (py * coef[0, 0] + px * coef[1, 0] + coef[2, 0],
            py * coef[0, 1] + px * coef[1, 1] + coef[2, 1])


CORRUPTIONS = {
    f.__name__: f for f in (   # ImageNet-C's order: noise, blur, weather, digital
        gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur,
        zoom_blur, snow, frost, fog, brightness, contrast, elastic_transform, pixelate,
        jpeg_compression,
    )
}


def list_corruptions() -> list[str]:
    return list(CORRUPTIONS)


def corruption_seed(base_seed: int, image_key, name: str) -> int:
    """A stable 63-bit seed; Python's hash() is salted per process, so sha256.

    Severity is left out on purpose (common random numbers): an image gets the same noise
    field, streak angle and haze at every severity, so its severity curve measures strength
    alone rather than strength plus a fresh draw."""
    text = f"{base_seed}:{image_key}:{name}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def _check(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise UserError(f"corruption {name!r}: unknown; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise UserError(f"corruption {name}: severity {severity} is not one of 1..5")


@contextlib.contextmanager
def _one_thread():
    """One image is a few thousand values: torch's intra-op threads cost more than they save
    (a 3x64x64 round() took 23 ms with 2 threads on a busy 2-core machine, 7 us with one).
    Parallelism belongs across images (DataLoader workers), not inside one."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def corrupt(x, name: str, severity: int, *, seed: int):
    """Apply corruption `name` at `severity` (1..5) to a (C, H, W) tensor in [0, 1]."""
    import torch
    _check(name, severity)
    with _one_thread():
        gen = torch.Generator().manual_seed(seed)
        return CORRUPTIONS[name](x.float(), severity, gen).clamp(0, 1)


class Corruption:
    """One corruption at one severity as an `ImageTransform` (audit/embed.py).

    The per-image seed comes from (seed, the image's pixels, name), not from the row
    index the embedder passes: the embed cache is keyed by transform key + image content, so a
    result that depended on the index would differ between a cold and a warm cache whenever
    the same image sits at another index (another subsample size, a duplicate image)."""

    def __init__(self, name: str, severity: int, *, seed: int = 0):
        _check(name, severity)
        self.name, self.severity, self.seed = name, severity, seed
        self.key = f"corrupt:{name}:{severity}:seed={seed}:v1"

    def __call__(self, img, index: int):
        from torchvision.transforms.functional import pil_to_tensor, to_pil_image
        rgb = img.convert("RGB")
        digest = hashlib.sha256(rgb.tobytes()).hexdigest()[:16]
        with _one_thread():
            x = pil_to_tensor(rgb).float() / 255
            out = corrupt(x, self.name, self.severity, seed=corruption_seed(self.seed, digest, self.name))
            return to_pil_image((out * 255).round().clamp(0, 255).byte(), mode="RGB")

    def __repr__(self) -> str:
        return f"Corruption({self.name!r}, {self.severity}, seed={self.seed})"


# -- ImageNet-C's baseline: AlexNet's errors, for ImageNet tasks ------------------------------

@functools.lru_cache(maxsize=1)
def alexnet_errors() -> dict[str, dict]:
    """{corruption: {"mean": e, "severities": [e_1 .. e_5]}}: AlexNet's ImageNet-C top-1 errors
    (label_sets/imagenet/alexnet_errors.yaml, which cites its sources)."""
    from audit.imagenet import data
    return data("alexnet_errors")["errors"]
