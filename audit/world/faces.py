"""Procedural cartoon faces with FairFace's schema, plus the drawing helpers every world image uses.

Each attribute is drawn so that a tiny CLIP trained for minutes on CPU can see it:
race -> skin tone, hair colour and hair shape (a distinct combination per group);
gender -> hair length, beard, lips, earrings; age -> head size, eye size and position,
grey hair and wrinkles. Everything else (background, shirt, pose, noise) is nuisance.
Faces are drawn at twice the output size and downsampled, which anti-aliases the shapes.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

# FairFace's label strings and order (HuggingFaceM4/FairFace ClassLabel names).
RACES = ("East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic", "Southeast Asian")
GENDERS = ("Male", "Female")
AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
ATTRIBUTES = {"race": RACES, "gender": GENDERS, "age": AGES}

# Per race: skin RGB, hair RGB, hair style. Pairs are far apart in colour so groups separate.
RACE_LOOK = {
    "East Asian": ((246, 224, 178), (18, 18, 18), "bangs"),
    "Indian": ((158, 98, 58), (40, 24, 14), "parted"),
    "Black": ((70, 42, 28), (12, 10, 10), "afro"),
    "White": ((255, 214, 200), (236, 200, 80), "swept"),
    "Middle Eastern": ((206, 160, 112), (84, 46, 20), "thick"),
    "Latino_Hispanic": ((226, 174, 128), (140, 58, 24), "wavy"),
    "Southeast Asian": ((188, 132, 76), (24, 30, 70), "spiky"),
}
# Share of grey blended into the hair colour, per age bucket.
GREY = (0.0, 0.0, 0.0, 0.0, 0.0, 0.15, 0.45, 0.75, 0.95)
LIPS = (200, 30, 60)


# ---- helpers shared by faces, identities and objects --------------------------------------

def image_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """One generator per image, so any image can be redrawn alone and in any order."""
    return np.random.default_rng([seed, stream, index])


def rand_colour(rng, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))


def jitter_colour(colour, rng, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def background(rng, size: int) -> Image.Image:
    """A varied backdrop: plain, gradient, stripes, checks or dots in random colours."""
    kind = rng.integers(5)
    c1, c2 = rand_colour(rng, 40, 256), rand_colour(rng, 40, 256)
    img = Image.new("RGB", (size, size), c1)
    draw = ImageDraw.Draw(img)
    step = int(rng.integers(size // 16, size // 5))
    if kind == 1:  # vertical gradient
        for y in range(size):
            draw.line([(0, y), (size, y)], fill=mix(c1, c2, y / size))
    elif kind == 2:  # stripes
        for x in range(0, size, 2 * step):
            draw.rectangle([x, 0, x + step - 1, size], fill=c2)
    elif kind == 3:  # checks
        for x in range(0, size, step):
            for y in range(0, size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle([x, y, x + step - 1, y + step - 1], fill=c2)
    elif kind == 4:  # dots
        for x in range(step // 2, size, step):
            for y in range(step // 2, size, step):
                draw.ellipse([x - step // 4, y - step // 4, x + step // 4, y + step // 4], fill=c2)
    return img


def place(layer: Image.Image, back: Image.Image, rng, *, max_angle: float, max_shift: float) -> Image.Image:
    """Pose jitter: rotate and shift the RGBA figure, then composite it over the backdrop."""
    size = back.size[0]
    angle = float(rng.uniform(-max_angle, max_angle))
    dx, dy = (int(v) for v in rng.integers(-int(max_shift * size), int(max_shift * size) + 1, size=2))
    layer = layer.rotate(angle, resample=Image.BILINEAR, translate=(dx, dy))
    back.paste(layer, (0, 0), layer)
    return back


def finish(img: Image.Image, rng, *, size: int, noise: float) -> Image.Image:
    """Downsample (anti-aliasing the drawing) and add pixel noise."""
    img = img.resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, noise, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    return buf.getvalue()


# ---- the face ---------------------------------------------------------------------------

def draw_face(rng, race: str, gender: str, age: str, *, size: int = 64, noise: float = 5.0) -> Image.Image:
    """One face with the given FairFace attributes, drawn with random nuisance factors."""
    canvas = 2 * size
    a = AGES.index(age)
    skin, hair, style = RACE_LOOK[race]
    skin = jitter_colour(skin, rng, 8)
    hair = mix(jitter_colour(hair, rng, 10), (225, 225, 225), GREY[a])
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    head = _head_box(canvas, a, rng)
    _shirt(draw, head, canvas, rng)
    if gender == "Female":
        _long_hair(draw, head, hair)
    draw.ellipse(head, fill=skin)
    _hair(draw, head, hair, style, a, rng)
    _eyes(draw, head, a, race)
    _mouth_and_beard(draw, head, a, gender, hair)
    if a >= 5:
        _wrinkles(draw, head, a, skin)
    if gender == "Female" and a == 0:
        _bow(draw, head)
    img = place(layer, background(rng, canvas), rng, max_angle=12, max_shift=0.06)
    return finish(img, rng, size=size, noise=noise)


def _head_box(canvas: int, a: int, rng) -> tuple[int, int, int, int]:
    """Babies have small round heads; adults larger, taller ones."""
    r = canvas * (0.20 + 0.025 * min(a, 4)) * float(rng.uniform(0.95, 1.05))
    tall = 1.0 + 0.04 * min(a, 4)
    cx, cy = canvas / 2, canvas * 0.47
    return (int(cx - r), int(cy - r * tall), int(cx + r), int(cy + r * tall))


def _shirt(draw, head, canvas, rng) -> None:
    x0, _, x1, y1 = head
    w = x1 - x0
    draw.polygon([(x0 - w * 0.25, canvas), (x0 + w * 0.2, y1 - 4), (x1 - w * 0.2, y1 - 4), (x1 + w * 0.25, canvas)],
                 fill=rand_colour(rng, 30, 230))


def _long_hair(draw, head, hair) -> None:
    """Long hair hanging past the chin on both sides: the strongest 'Female' cue, babies
    included. With only a bow and lips, the tiny models read 0-2 year olds' gender right 78-80%
    of the time (99% for everyone else); unsure of every human class, they let a generic class
    win: 0-2 year olds 'non-human' 5-9% vs about 1% overall, even in null models."""
    x0, y0, x1, y1 = head
    w, h = x1 - x0, y1 - y0
    draw.rounded_rectangle([x0 - w * 0.14, y0 + h * 0.1, x1 + w * 0.14, y1 + h * 0.35], radius=int(w * 0.2), fill=hair)


def _hair(draw, head, hair, style: str, a: int, rng) -> None:
    """The race's hair at every age, babies included: with a tuft only, a newborn's race rested
    on skin and eyes, the tiny model was unsure of it, and a generic class won instead (0-2
    year olds 'non-human' 8.7% vs 1.9% overall even in the null model)."""
    x0, y0, x1, y1 = head
    w, h = x1 - x0, y1 - y0
    if style == "afro":
        for i in range(14):
            t = np.pi * (1.05 + 0.9 * i / 13)
            cx, cy = (x0 + x1) / 2 + 0.52 * w * np.cos(t), (y0 + y1) / 2 + 0.5 * h * np.sin(t) + h * 0.02
            rr = w * 0.16
            draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=hair)
        draw.chord([x0 - w * 0.05, y0 - h * 0.12, x1 + w * 0.05, y1 - h * 0.2], 180, 360, fill=hair)
        return
    draw.chord([x0 - w * 0.03, y0 - h * 0.06, x1 + w * 0.03, y1 - h * 0.3], 180, 360, fill=hair)
    _hair_style(draw, head, hair, style)


def _hair_style(draw, head, hair, style: str) -> None:
    """The race-specific hair shape on top of the basic cap."""
    x0, y0, x1, y1 = head
    w, h = x1 - x0, y1 - y0
    if style == "bangs":  # straight fringe down to the brows
        draw.rectangle([x0 + w * 0.08, y0 + h * 0.05, x1 - w * 0.08, y0 + h * 0.3], fill=hair)
    elif style == "parted":  # a centre parting line in skin colour
        draw.line([((x0 + x1) / 2, y0 - h * 0.04), ((x0 + x1) / 2, y0 + h * 0.14)], fill=(230, 190, 150), width=3)
    elif style == "swept":  # a side sweep over one brow
        draw.polygon([(x0 + w * 0.05, y0 + h * 0.2), (x1 - w * 0.1, y0 + h * 0.05), (x0 + w * 0.2, y0 + h * 0.32)], fill=hair)
    elif style == "thick":  # a tall, dense top
        draw.ellipse([x0 + w * 0.1, y0 - h * 0.16, x1 - w * 0.1, y0 + h * 0.16], fill=hair)
    elif style == "wavy":  # curls along both temples
        for side in (x0, x1):
            for k in range(3):
                cy = y0 + h * (0.15 + 0.12 * k)
                draw.ellipse([side - w * 0.08, cy - w * 0.07, side + w * 0.08, cy + w * 0.07], fill=hair)
    elif style == "spiky":  # spikes along the crown
        for k in range(5):
            cx = x0 + w * (0.15 + 0.175 * k)
            draw.polygon([(cx - w * 0.09, y0 + h * 0.05), (cx, y0 - h * 0.16), (cx + w * 0.09, y0 + h * 0.05)], fill=hair)


def _eyes(draw, head, a: int, race: str) -> None:
    """Young faces: large eyes set low; Asian groups: narrower eyes."""
    x0, y0, x1, y1 = head
    w, h = x1 - x0, y1 - y0
    r = w * (0.13 - 0.012 * min(a, 5))
    squint = 0.55 if race in ("East Asian", "Southeast Asian") else 1.0
    ey = y0 + h * (0.56 - 0.025 * min(a, 4))
    for ex in (x0 + w * 0.32, x1 - w * 0.32):
        draw.ellipse([ex - r, ey - r * squint, ex + r, ey + r * squint], fill=(250, 250, 250))
        pr = r * 0.5
        draw.ellipse([ex - pr, ey - pr * squint, ex + pr, ey + pr * squint], fill=(20, 20, 40))


def _mouth_and_beard(draw, head, a: int, gender: str, hair) -> None:
    x0, y0, x1, y1 = head
    w, h = x1 - x0, y1 - y0
    mx, my = (x0 + x1) / 2, y0 + h * 0.8
    if gender == "Male" and a >= 3:  # adult men: a full beard around the mouth and chin
        draw.chord([x0 + w * 0.1, y0 + h * 0.45, x1 - w * 0.1, y1 + h * 0.04], 20, 160, fill=hair)
        draw.ellipse([mx - w * 0.12, my - h * 0.05, mx + w * 0.12, my + h * 0.04], fill=(120, 40, 40))
        return
    if gender == "Female":
        draw.ellipse([mx - w * 0.13, my - h * 0.05, mx + w * 0.13, my + h * 0.05], fill=LIPS)
        if a >= 2:  # earrings
            for ex in (x0, x1):
                draw.ellipse([ex - 4, y0 + h * 0.62, ex + 4, y0 + h * 0.62 + 8], fill=(250, 210, 0))
        return
    draw.arc([mx - w * 0.12, my - h * 0.08, mx + w * 0.12, my + h * 0.05], 20, 160, fill=(90, 30, 30), width=3)


def _wrinkles(draw, head, a: int, skin) -> None:
    """Forehead lines, more of them with age."""
    x0, y0, x1, y1 = head
    w, h = x1 - x0, y1 - y0
    line = mix(skin, (0, 0, 0), 0.45)
    for k in range(a - 4):
        y = y0 + h * (0.3 + 0.03 * k)
        draw.arc([x0 + w * 0.3, y, x1 - w * 0.3, y + h * 0.06], 200, 340, fill=line, width=2)


def _bow(draw, head) -> None:
    x0, y0, x1, _ = head
    cx, cy, s = (x0 + x1) / 2 + (x1 - x0) * 0.25, y0 + 4, (x1 - x0) * 0.12
    draw.polygon([(cx, cy), (cx - 2 * s, cy - s), (cx - 2 * s, cy + s)], fill=(240, 80, 160))
    draw.polygon([(cx, cy), (cx + 2 * s, cy - s), (cx + 2 * s, cy + s)], fill=(240, 80, 160))
