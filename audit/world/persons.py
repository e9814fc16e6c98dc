"""People in context (FACET-like): a figure at work, its occupation told by the scene.

A person is a head (the face drawing of faces.py) on a body, inside a scene: backdrop, uniform
and prop say the occupation class; gender presentation (hair length, beard, lips), Monk skin
tone (the skin colour) and age group (grey hair, wrinkles, eyes) are drawn on the person alone.
A planted person is drawn in the scene of another class (`reads_as`), so a model trained on
the world recognises the occupation less often for the group the plant names.

The figure is drawn at 2x and finished at the world's image size; a validation image places
it on a larger canvas (FACET gives a bounding box per person), so a reader must crop.
"""
from __future__ import annotations

import json

from PIL import Image, ImageDraw

from audit.world import faces
from audit.world.captions import _count
from audit.world.faces import finish, jitter_colour, mix, rand_colour

GENDERS = ("masculine", "feminine")          # FACET gender_presentation_{masc,fem}
GENDER_COLUMNS = {"masculine": "masc", "feminine": "fem"}
AGE_GROUPS = ("young", "middle", "older")    # FACET age_presentation_{young,middle,older}
SKIN_TONES = tuple(range(1, 11))             # the Monk Skin Tone scale
ATTRIBUTES = {"gender": GENDERS, "age": AGE_GROUPS, "skin_tone": SKIN_TONES}
# The Monk Skin Tone scale's ten reference colours (skintone.google).
MONK = ((246, 237, 228), (243, 231, 219), (247, 234, 208), (234, 218, 186), (215, 189, 150),
        (160, 126, 86), (130, 92, 67), (96, 65, 52), (58, 49, 42), (41, 36, 32))
AGE_INDEX = {"young": 3, "middle": 5, "older": 7}   # faces.py's age index: eyes, grey, wrinkles
HAIR = ((18, 18, 18), (40, 24, 14), (84, 46, 20), (140, 58, 24), (236, 200, 80))
STYLES = ("bangs", "parted", "swept", "thick", "wavy", "spiky")
# Per class: backdrop (kind, colour, colour), uniform colour, prop. Far apart in colour and
# layout, so the tiny model tells the classes apart at 64 px.
LOOKS = {
    "gardener": ("horizon", (150, 200, 240), (60, 150, 45), (35, 95, 35), "plant"),
    "nurse": ("plain", (195, 225, 245), (195, 225, 245), (250, 250, 250), "cross"),
    "dancer": ("spot", (60, 20, 80), (250, 230, 120), (230, 60, 170), "tutu"),
    "craftsman": ("planks", (150, 95, 45), (110, 65, 30), (205, 170, 110), "hammer"),
    "reporter": ("stripes", (40, 55, 110), (150, 160, 175), (45, 45, 50), "mic"),
    "waiter": ("checks", (190, 30, 40), (245, 235, 210), (15, 15, 15), "tray"),
    "laborer": ("hazard", (130, 130, 130), (245, 200, 20), (255, 120, 0), "hardhat"),
    "student": ("board", (30, 80, 50), (235, 235, 235), None, "backpack"),
}


def draw_person(rng, person: dict, *, size: int = 64, noise: float = 5.0) -> Image.Image:
    """One person (gender, age, skin_tone) in the scene of `person['drawn_as']`."""
    canvas = 2 * size
    backdrop, c1, c2, uniform, prop = LOOKS[person["drawn_as"]]
    img = _backdrop(backdrop, jitter_colour(c1, rng, 12), jitter_colour(c2, rng, 12), canvas, rng)
    layer = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    uniform = jitter_colour(uniform, rng, 12) if uniform else rand_colour(rng, 40, 220)
    head = _head_box(canvas, rng)
    _body(draw, head, canvas, uniform, prop)
    _head(draw, head, person, rng)
    _prop(draw, head, canvas, prop, rng)
    img = faces.place(layer, img, rng, max_angle=4, max_shift=0.05)
    return finish(img, rng, size=size, noise=noise)


def draw_box(rng, canvas: int, size: int) -> dict:
    """Where a figure of `size` px goes on the canvas: FACET's bounding_box, in pixels."""
    x, y = (int(v) for v in rng.integers(0, canvas - size + 1, size=2))
    return {"x": x, "y": y, "width": size, "height": size}


def place_in_canvas(rng, figure: Image.Image, canvas: int, box: dict, *, noise: float) -> Image.Image:
    """The figure pasted into its box on a busy canvas (the world's nuisance backdrops)."""
    import numpy as np

    back = faces.background(rng, canvas)
    arr = np.asarray(back, dtype=np.float32) + rng.normal(0.0, noise, size=(canvas, canvas, 3))
    back = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    back.paste(figure, (box["x"], box["y"]))
    return back


def draw_people(rng, classes: list[str], per_class: int, plants: list[dict]) -> list[dict]:
    """`per_class` people of each class, gender, age group and skin tone uniform and
    independent; each planted one (a plant's rate, for the people its `where` names) is drawn
    in the scene of the plant's `reads_as` class."""
    people = []
    for cls in classes:
        for _ in range(per_class):
            p = {"class": cls, **{a: v[int(rng.integers(len(v)))] for a, v in ATTRIBUTES.items()}}
            p["skin_tone"] = int(p["skin_tone"])
            plant = planted_rule(plants, p)
            hit = plant is not None and rng.random() < float(plant["rate"])
            people.append({**p, "drawn_as": plant["reads_as"] if hit else cls})
    return people


def planted_rule(plants: list[dict], person: dict) -> dict | None:
    """The first plant for the person's class whose `where` matches them."""
    for plant in plants:
        if plant["class"] == person["class"] and all(person[a] in v for a, v in plant.get("where", {}).items()):
            return plant
    return None


def expected_rates(classes: list[str], plants: list[dict]) -> dict:
    """{class: {gender: planted share drawn in another scene}}, averaged over the (uniform)
    age groups and skin tones."""
    import itertools

    out = {}
    for cls in classes:
        out[cls] = {}
        for g in GENDERS:
            cells = [{"class": cls, "gender": g, "age": a, "skin_tone": t}
                     for a, t in itertools.product(AGE_GROUPS, SKIN_TONES)]
            rates = [float(r["rate"]) if (r := planted_rule(plants, c)) else 0.0 for c in cells]
            out[cls][g] = round(sum(rates) / len(rates), 6)
    return out


def realized(people: list[dict]) -> dict:
    """{class: {gender: {n, k, rate}}}: how many were drawn in another class's scene."""
    out = {}
    for cls in dict.fromkeys(p["class"] for p in people):
        out[cls] = {}
        for g in GENDERS:
            flags = [p["drawn_as"] != cls for p in people if p["class"] == cls and p["gender"] == g]
            out[cls][g] = _count(flags)
    return out


def facet_row(filename: str, person_id: int, person: dict, box: dict, rng) -> dict:
    """One row of FACET's annotations.csv. Skin tone as FACET gives it, the number of
    annotators who chose each tone: two or three of three agree on the true tone, the third
    (if any) chose a neighbour."""
    row = {"filename": filename, "person_id": person_id, "class1": person["class"], "class2": ""}
    for g in (*GENDER_COLUMNS.values(), "non_binary", "na"):
        row[f"gender_presentation_{g}"] = int(g == GENDER_COLUMNS[person["gender"]])
    for a in (*AGE_GROUPS, "na"):
        row[f"age_presentation_{a}"] = int(a == person["age"])
    votes = {t: 0 for t in SKIN_TONES}
    tone = person["skin_tone"]
    votes[tone] = 3
    if rng.random() < 0.5:
        neighbour = min(10, max(1, tone + (1 if rng.random() < 0.5 else -1)))
        if neighbour != tone:
            votes[tone], votes[neighbour] = 2, 1
    row.update({f"skin_tone_{t}": v for t, v in votes.items()}, skin_tone_na=0)
    row["bounding_box"] = json.dumps(box)
    return row


# ---- drawing ----------------------------------------------------------------------------

def _backdrop(kind: str, c1, c2, canvas: int, rng) -> Image.Image:
    img = Image.new("RGB", (canvas, canvas), c1)
    draw = ImageDraw.Draw(img)
    if kind == "horizon":  # sky over grass
        draw.rectangle([0, int(canvas * float(rng.uniform(0.5, 0.62))), canvas, canvas], fill=c2)
    elif kind == "spot":  # a stage light cone
        x = canvas * float(rng.uniform(0.35, 0.65))
        draw.polygon([(x - 8, 0), (x + 8, 0), (x + canvas * 0.45, canvas), (x - canvas * 0.45, canvas)], fill=c2)
    elif kind == "planks":
        for y in range(0, canvas, 16):
            draw.rectangle([0, y, canvas, y + 2], fill=c2)
    elif kind == "stripes":
        for x in range(0, canvas, 24):
            draw.rectangle([x, 0, x + 9, canvas], fill=c2)
    elif kind == "checks":
        for x in range(0, canvas, 16):
            for y in range(0, canvas, 16):
                if (x // 16 + y // 16) % 2:
                    draw.rectangle([x, y, x + 15, y + 15], fill=c2)
    elif kind == "hazard":  # grey site over black and yellow hazard stripes
        top = int(canvas * 0.6)
        draw.rectangle([0, top, canvas, canvas], fill=(20, 20, 20))
        for x in range(-canvas, canvas, 20):
            draw.polygon([(x, top), (x + 10, top), (x + 10 + canvas // 2, canvas), (x + canvas // 2, canvas)], fill=c2)
    elif kind == "board":  # a blackboard with chalk lines
        for k in range(4):
            y = int(canvas * (0.12 + 0.1 * k + float(rng.uniform(-0.02, 0.02))))
            draw.line([(canvas * 0.08, y), (canvas * float(rng.uniform(0.5, 0.92)), y)], fill=c2, width=2)
    return img


def _head_box(canvas: int, rng) -> tuple[int, int, int, int]:
    r = canvas * 0.15 * float(rng.uniform(0.95, 1.05))
    cx, cy = canvas / 2, canvas * 0.32
    return (int(cx - r), int(cy - r * 1.1), int(cx + r), int(cy + r * 1.1))


def _body(draw, head, canvas: int, uniform, prop: str) -> None:
    x0, _, x1, y1 = head
    w, cx = x1 - x0, (x0 + x1) / 2
    top = y1 - 2
    draw.rectangle([cx - w * 0.9, top + 4, cx + w * 0.9, canvas], fill=uniform)            # torso
    for side in (-1, 1):                                                                    # arms
        xs = sorted((cx + side * w * 0.9, cx + side * w * 1.25))
        draw.rectangle([xs[0], top + 8, xs[1], canvas * 0.86], fill=uniform)
    if prop == "tray":  # the waiter's white shirt under a black vest
        draw.rectangle([cx - w * 0.25, top + 4, cx + w * 0.25, canvas], fill=(250, 250, 250))
    if prop == "cross":
        draw.rectangle([cx - 3, top + 14, cx + 3, top + 32], fill=(220, 20, 30))
        draw.rectangle([cx - 9, top + 20, cx + 9, top + 26], fill=(220, 20, 30))
    if prop == "tutu":
        draw.polygon([(cx - w * 1.6, canvas * 0.9), (cx, canvas * 0.7), (cx + w * 1.6, canvas * 0.9)], fill=(255, 150, 210))


def _head(draw, head, person: dict, rng) -> None:
    """The face of faces.py on a smaller head: gender via hair length, beard and lips; age via
    grey hair, wrinkles and eyes; the skin in its Monk tone."""
    a = AGE_INDEX[person["age"]]
    skin = jitter_colour(MONK[person["skin_tone"] - 1], rng, 4)
    hair = mix(jitter_colour(HAIR[int(rng.integers(len(HAIR)))], rng, 10), (225, 225, 225), faces.GREY[a])
    gender = "Female" if person["gender"] == "feminine" else "Male"
    if gender == "Female":
        faces._long_hair(draw, head, hair)
    draw.ellipse(head, fill=skin)
    faces._hair(draw, head, hair, STYLES[int(rng.integers(len(STYLES)))], a, rng)
    faces._eyes(draw, head, a, "")
    faces._mouth_and_beard(draw, head, a, gender, hair)
    if a >= 5:
        faces._wrinkles(draw, head, a, skin)


def _prop(draw, head, canvas: int, prop: str, rng) -> None:
    x0, y0, x1, y1 = head
    w, cx = x1 - x0, (x0 + x1) / 2
    hand = cx + w * 1.1  # the right hand, where props are held
    if prop == "plant":
        draw.line([(hand, canvas * 0.85), (hand, canvas * 0.55)], fill=(20, 120, 20), width=4)
        draw.ellipse([hand - 10, canvas * 0.47, hand + 10, canvas * 0.6], fill=(250, 210, 30))
    elif prop == "hammer":
        draw.line([(hand, canvas * 0.88), (hand, canvas * 0.58)], fill=(120, 70, 20), width=5)
        draw.rectangle([hand - 12, canvas * 0.54, hand + 12, canvas * 0.6], fill=(90, 90, 95))
    elif prop == "mic":
        draw.line([(hand - 6, canvas * 0.8), (hand - 14, canvas * 0.52)], fill=(10, 10, 10), width=5)
        draw.ellipse([hand - 22, canvas * 0.44, hand - 6, canvas * 0.56], fill=(60, 60, 60))
    elif prop == "tray":
        draw.ellipse([hand - 18, canvas * 0.52, hand + 18, canvas * 0.57], fill=(200, 200, 210))
        draw.rectangle([hand - 4, canvas * 0.42, hand + 4, canvas * 0.53], fill=(170, 220, 250))
    elif prop == "hardhat":
        draw.chord([x0 - 6, y0 - 12, x1 + 6, y0 + (y1 - y0) * 0.55], 180, 360, fill=(250, 220, 0))
    elif prop == "backpack":
        for side in (-1, 1):
            draw.line([(cx + side * w * 0.55, y1), (cx + side * w * 0.55, canvas)], fill=(60, 40, 120), width=5)
        draw.rectangle([hand - 12, canvas * 0.62, hand + 8, canvas * 0.78], fill=rand_colour(rng, 60, 240))
    elif prop == "cross":  # a nurse's cap
        draw.rectangle([cx - w * 0.35, y0 - 8, cx + w * 0.35, y0 + 4], fill=(250, 250, 250))
