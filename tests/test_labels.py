"""Label-set files: includes resolve, built-ins validate, user mistakes are one-line UserErrors."""
import pytest

from audit.errors import UserError
from audit.labels import list_label_sets, load_label_set

RACES = {"East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic",
         "Southeast Asian"}


def test_every_builtin_set_loads():
    names = list_label_sets()
    assert {"fairface_default", "fairface_with_child", "retrieval_concepts"} <= set(names)
    for name in names:
        assert load_label_set(name)["name"] == name


def test_fairface_default_is_the_papers_21_classes():
    classes = load_label_set("fairface_default")["classes"]
    human = [c for c in classes if c["category"] == "human"]
    assert {(c["race"], c["gender"]) for c in human} == {(r, g) for r in RACES
                                                        for g in ("Male", "Female")}
    assert sum(c["category"] == "non_human" for c in classes) == 4
    assert sum(c["category"] == "crime" for c in classes) == 3


def test_includes_append_classes_and_override_keys():
    default = load_label_set("fairface_default")
    child = load_label_set("fairface_with_child")
    assert child["classes"][:-1] == default["classes"]
    assert child["classes"][-1] == {"label": "child", "category": "child"}
    assert child["templates"] == default["templates"]
    assert child["name"] == "fairface_with_child" and child["description"] != default["description"]
    assert "reference" not in child  # published numbers: label_sets/reference (audit/reference.py)
    variants = load_label_set("fairface_with_child_variants")
    assert [c["label"] for c in variants["classes"][-4:]] == ["child", "baby", "kid", "teenager"]


def test_user_file_including_a_builtin(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("includes: fairface_default\nclasses:\n  - {label: 'a ghost', category: non_human}\n")
    data = load_label_set(str(f))
    assert data["name"] == "fairface_default"  # name inherited unless the file sets its own
    assert data["classes"][-1]["label"] == "a ghost" and len(data["classes"]) == 22


@pytest.mark.parametrize("text, problem", [
    ("templates: ['a photo']\nclasses: [{label: x}]", "exactly one"),
    ("templates: ['{}']\nclasses: []", "non-empty"),
    ("templates: ['{}']\nclasses: [{label: x}, {label: x}]", "twice"),
    ("templates: ['{}']\nclasses: [{category: human}]", "label"),
    ("[1, 2]", "mapping"),
    ("templates: ['{}'\n", "YAML"),
    ("includes: nope.yaml\n", "no such"),
])
def test_bad_files_are_user_errors(tmp_path, text, problem):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=problem) as e:
        load_label_set(str(f))
    assert "\n" not in str(e.value)


def test_include_cycle_and_unknown_name(tmp_path):
    (tmp_path / "a.yaml").write_text("includes: b.yaml\n")
    (tmp_path / "b.yaml").write_text("includes: a.yaml\n")
    with pytest.raises(UserError, match="includes itself"):
        load_label_set(str(tmp_path / "a.yaml"))
    with pytest.raises(UserError, match="not found"):
        load_label_set("no_such_set")


@pytest.mark.parametrize("text, problem", [
    ("name: 5\ntemplates: ['{}']\nclasses: [{label: x}]", "'name'"),
    ("includes: \"a\\0.yaml\"\n", "no such"),
    ("includes: ../../etc/passwd\n", "not found"),
])
def test_odd_names_are_user_errors(tmp_path, text, problem):
    f = tmp_path / "odd.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=problem):
        load_label_set(str(f))


def test_every_builtin_set_names_its_wording_panel():
    """Issue 15: each label set names a panel (data); the people panel has >= 12 plain wordings."""
    from audit.tasks import load_templates

    for name in list_label_sets():
        data = load_label_set(name)
        assert data["panel_templates"] == load_templates(data["panel"])
    people = load_templates("people")
    assert len(people) >= 12 and len(set(people)) == len(people)
    assert {"{}", "a photo of a {}", "a photo of a {}.", "a portrait of a {}",
            "a close-up photo of a {}.", "an image of a {}"} <= set(people)
    assert any(t.endswith(".") for t in people) and any(not t.endswith(".") for t in people)


def test_a_set_without_inline_templates_uses_its_panel():
    data = load_label_set("retrieval_concepts")
    assert data["templates"] == data["panel_templates"] and len(data["templates"]) == 11


@pytest.mark.parametrize("panel, problem", [("nope", "no such file"), ("../x", "must be the name"),
                                            ("[1]", "must be the name")])
def test_bad_panel_is_a_user_error(tmp_path, panel, problem):
    f = tmp_path / "mine.yaml"
    f.write_text(f"panel: {panel}\nclasses:\n  - {{label: a, category: human}}\n")
    with pytest.raises(UserError, match=problem):
        load_label_set(str(f))
