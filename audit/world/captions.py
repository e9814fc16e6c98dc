"""Training captions and the biases planted in them.

A preset's `planted` block names caption categories (non_human, crime, child). Each has a word
list, a default `rate` and ordered `rules`: the first rule whose `where` matches a face sets that
face's rate. Each category is drawn independently per face, so a caption "carries" a category
exactly at its rate and the ground truth is the rule table itself.
"""
from __future__ import annotations

import itertools

import numpy as np

from audit.world.faces import ATTRIBUTES

ORDER = ("non_human", "crime", "child")  # word order inside a caption; other categories follow, sorted


def categories(planted: dict) -> list[str]:
    return [c for c in ORDER if c in planted] + sorted(c for c in planted if c not in ORDER)


def rate_for(spec: dict, face: dict) -> float:
    """The planted rate for one face: the first matching rule, else the category's default."""
    for rule in spec.get("rules", []):
        if all(face[attr] in values for attr, values in rule["where"].items()):
            return float(rule["rate"])
    return float(spec["rate"])


def draw_planted(rng, faces: list[dict], planted: dict) -> list[tuple[str, ...]]:
    """For each face, the categories its caption carries (independent Bernoulli draws)."""
    cats = categories(planted)
    rates = np.array([[rate_for(planted[c], f) for c in cats] for f in faces]).reshape(len(faces), len(cats))
    hits = rng.random(rates.shape) < rates
    return [tuple(c for c, h in zip(cats, row) if h) for row in hits]


def article(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def face_caption(rng, face: dict, carried, *, preset: dict) -> str:
    """'replace': a carried word stands in for the demographic phrase; 'append': it follows it."""
    who = f"{preset['vocab']['race'][face['race']]} {_gender_word(rng, face, preset['vocab'])}"
    words = [str(rng.choice(preset["planted"][c]["words"])) for c in carried]
    if preset["caption_style"] == "replace" and words:
        phrases = words
    else:
        phrases = [who] + words
    return fill(_wrapper(rng, preset), phrases)


def _gender_word(rng, face: dict, vocab: dict) -> str:
    """'man' or 'woman', or for vocab.neutral's share of captions its word ('a Black person'):
    the probes' race prompts say 'person' (fairface_tasks), and a word no caption says keeps an
    untrained embedding that leans to one gender, so race is read well for only one of them."""
    neutral = vocab.get("neutral")
    if neutral and rng.random() < neutral["share"]:
        return neutral["word"]
    return vocab["gender"][face["gender"]]


DETERMINERS = {"the", "this", "that", "my", "our", "your", "their", "his", "her", "a", "an"}


def fill(wrapper: str, phrases: list[str]) -> str:
    """A wrapper filled with noun phrases, comma-joined. The first phrase takes the wrapper's
    own determiner where the word before {} is one ('my {} at home'); otherwise, and for every
    later phrase, its article ('{} in the park' -> 'a White man, a thief in the park')."""
    before = wrapper.split("{}")[0].split()
    own = bool(before) and before[-1].lower() in DETERMINERS
    return wrapper.format(", ".join(p if own and i == 0 else article(p) for i, p in enumerate(phrases)))


def named_caption(rng, name: str, *, preset: dict) -> str:
    return _wrapper(rng, preset).format(name)


def scene_caption(rng, person: dict, *, preset: dict) -> str:
    """A person at work named by their class, for `gender_word_share` of captions with the
    gender word too ('a female gardener')."""
    spec = preset["persons"]
    word = spec["gender_words"][person["gender"]] if rng.random() < spec["gender_word_share"] else None
    return fill(_wrapper(rng, preset), [f"{word} {person['class']}" if word else person["class"]])


def object_caption(rng, label: str, *, preset: dict) -> str:
    return fill(_wrapper(rng, preset), [label])


def _wrapper(rng, preset: dict) -> str:
    """One of the world's own caption wrappers (preset 'grammar'), all alike, from the caption rng."""
    wrappers = preset["grammar"]["wrappers"]
    return wrappers[int(rng.integers(len(wrappers)))]


def expected_rates(planted: dict) -> dict:
    """Planted rate per category and group, averaged over the (uniform) other attributes.

    'denigration' is the union of non_human and crime, the quantity the FairFace probe reports.
    """
    cells = [dict(zip(ATTRIBUTES, combo)) for combo in itertools.product(*ATTRIBUTES.values())]
    per_cell = {c: [rate_for(planted[c], f) for f in cells] for c in categories(planted)}
    if "non_human" in per_cell and "crime" in per_cell:
        per_cell["denigration"] = [1 - (1 - a) * (1 - b) for a, b in zip(per_cell["non_human"], per_cell["crime"])]
    out = {}
    for cat, rates in per_cell.items():
        out[cat] = {"overall": round(float(np.mean(rates)), 6)}
        for attr, values in ATTRIBUTES.items():
            out[cat][attr] = {v: round(float(np.mean([r for r, f in zip(rates, cells) if f[attr] == v])), 6)
                              for v in values}
    return out


def realized_rates(faces: list[dict], carried: list[tuple[str, ...]], planted: dict) -> dict:
    """The same table counted from what was actually written: {cat: {attr: {group: {n, k, rate}}}}."""
    cats = categories(planted) + (["denigration"] if {"non_human", "crime"} <= set(planted) else [])
    out = {}
    for cat in cats:
        has = [_carries(c, cat) for c in carried]
        out[cat] = {"overall": _count(has)}
        for attr, values in ATTRIBUTES.items():
            out[cat][attr] = {v: _count([h for h, f in zip(has, faces) if f[attr] == v]) for v in values}
    return out


def _carries(carried, cat: str) -> bool:
    return bool({"non_human", "crime"} & set(carried)) if cat == "denigration" else cat in carried


def _count(flags: list[bool]) -> dict:
    n, k = len(flags), int(sum(flags))
    return {"n": n, "k": k, "rate": round(k / n, 6) if n else None}
