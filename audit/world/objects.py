"""Object classes (colour x shape) and their renditions for the distribution-shift probe.

`clean`: a filled shape on a plain, lightly tinted backdrop (the only kind used in training);
`sketch`: the outline alone on white; `texture`: the shape filled with a pattern over a busy
backdrop. The class is identifiable in every rendition (colour and shape survive), only the style
shifts.
Region/income objects (`regions/`) are the clean rendition, or, at a planted rate per group,
a cluttered one (`draw_cluttered`).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from PIL import Image, ImageDraw

from audit.world.captions import rate_for
from audit.world.faces import background, finish, jitter_colour, mix, rand_colour

SPLITS = ("clean", "sketch", "texture")
GROUPS = ("region", "income")  # the group columns of regions/metadata.csv (Dollar Street, GeoDE)


def class_labels(objects: dict) -> list[str]:
    """Labels like 'red circle', in a fixed order (colours, then shapes, as the preset lists them)."""
    return [f"{c} {s}" for c in objects["colours"] for s in objects["shapes"]]


def draw_object(rng, label: str, split: str, *, objects: dict, size: int = 64, noise: float = 5.0) -> Image.Image:
    colour_name, shape = label.split(" ", 1)
    colour = jitter_colour(objects["colours"][colour_name], rng, 12)
    canvas = 2 * size
    if split == "clean":
        img = Image.new("RGB", (canvas, canvas), mix(rand_colour(rng, 200, 256), (255, 255, 255), 0.5))
    elif split == "sketch":
        img = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    else:
        img = background(rng, canvas)
    pts = _outline(shape, canvas, rng)
    draw = ImageDraw.Draw(img)
    if split == "sketch":
        draw.line(pts + pts[:1], fill=colour, width=4, joint="curve")
    else:
        draw.polygon(pts, fill=colour)
    if split == "texture":
        _hatch(img, pts, colour, rng)
    return finish(img, rng, size=size, noise=noise)


def _outline(shape: str, canvas: int, rng, *, scale=(0.25, 0.38), spread: float = 0.08) -> list[tuple[float, float]]:
    """The shape as a polygon, with random position, scale and rotation."""
    r = canvas * float(rng.uniform(*scale))
    cx, cy = (canvas / 2 + float(rng.uniform(-spread, spread)) * canvas for _ in range(2))
    turn = float(rng.uniform(0, 2 * math.pi))
    if shape == "circle":
        angles, radii = [2 * math.pi * k / 48 for k in range(48)], [r] * 48
    elif shape == "star":
        angles = [turn + math.pi * k / 5 for k in range(10)]
        radii = [r if k % 2 == 0 else r * 0.45 for k in range(10)]
    else:
        sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[shape]
        angles, radii = [turn + 2 * math.pi * k / sides for k in range(sides)], [r] * sides
    return [(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii)]


def _hatch(img: Image.Image, pts, colour, rng) -> None:
    """Stripe the shape with a contrasting colour, through a mask of the shape."""
    canvas = img.size[0]
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    stripes = Image.new("RGB", img.size, colour)
    other = mix(colour, rand_colour(rng, 0, 256), 0.6)
    draw, step = ImageDraw.Draw(stripes), int(rng.integers(6, 14))
    for x in range(-canvas, canvas, 2 * step):
        draw.polygon([(x, 0), (x + step, 0), (x + step + canvas, canvas), (x + canvas, canvas)], fill=other)
    img.paste(stripes, (0, 0), mask)


def draw_cluttered(rng, label: str, *, objects: dict, size: int = 64, noise: float = 5.0) -> Image.Image:
    """The hard rendition of region/income objects: the class's shape, small and faded toward
    a busy backdrop, among smaller shapes of other colours and shapes. Never in training."""
    colour_name, shape = label.split(" ", 1)
    canvas = 2 * size
    img = background(rng, canvas)
    draw = ImageDraw.Draw(img)
    others = [c for c in objects["colours"] if c != colour_name]
    for _ in range(int(rng.integers(4, 7))):
        other = objects["shapes"][int(rng.integers(len(objects["shapes"])))]
        fill = jitter_colour(objects["colours"][others[int(rng.integers(len(others)))]], rng, 12)
        draw.polygon(_outline(other, canvas, rng, scale=(0.1, 0.16), spread=0.36), fill=fill)
    faded = mix(jitter_colour(objects["colours"][colour_name], rng, 12), (150, 150, 150), 0.45)
    draw.polygon(_outline(shape, canvas, rng, scale=(0.14, 0.2)), fill=faded)
    return finish(img, rng, size=size, noise=noise)


def draw_region_items(rng, labels: list[str], per_class: int, spec: dict) -> list[dict]:
    """`per_class` images of each label, region and income uniform and independent; each hard
    (cluttered) at the `hard` rule's rate for its groups (first matching rule, else `rate`)."""
    hard = spec.get("hard", {"rate": 0.0})
    items = []
    for label in labels:
        for _ in range(per_class):
            item = {"label": label, **{a: spec[a][int(rng.integers(len(spec[a])))] for a in GROUPS}}
            items.append({**item, "hard": bool(rng.random() < rate_for(hard, item))})
    return items


def expected_hard(spec: dict) -> dict:
    """The planted hard share per group, averaged over the (uniform) other attribute."""
    hard = spec.get("hard", {"rate": 0.0})
    cells = [dict(zip(GROUPS, combo)) for combo in itertools.product(*(spec[a] for a in GROUPS))]
    return {a: {g: round(float(np.mean([rate_for(hard, c) for c in cells if c[a] == g])), 6) for g in spec[a]}
            for a in GROUPS}
