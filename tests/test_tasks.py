"""core.tasks: task specs are data, and everything a page needs travels from them into model.json."""

from __future__ import annotations

import json

import pytest

from core.tasks import SPEC_KEYS, TASKS_DIR, TaskError, current_subgroups, display_title, load_spec, spec_facts


@pytest.mark.parametrize("path", sorted(TASKS_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_committed_spec_is_complete(path):
    spec = load_spec(path.stem)
    assert spec["name"] == path.stem
    for key in ("title", "short_title", "class_names", "split", "source", "routing", "intended_use", "limits"):
        assert spec.get(key), f"{path.name} lacks {key}"
    assert spec["source"]["citation"] and spec["source"]["licence"]
    assert spec["split"]["policy"] in ("group", "file", "listed") and spec["split"]["description"]


def test_unknown_name_is_a_plain_class_folder_task():
    spec = load_spec("my_own_dataset")
    assert spec == {"name": "my_own_dataset", "title": "my_own_dataset", "split": {"policy": "file"}}


def test_a_spec_file_by_path_and_its_errors(tmp_path):
    good = tmp_path / "knees.json"
    good.write_text(json.dumps({"name": "knees", "class_names": ["ok", "torn"], "flip": True}))
    assert load_spec(str(good))["title"] == "knees"
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(TaskError, match="not valid JSON"):
        load_spec(str(tmp_path / "bad.json"))
    (tmp_path / "odd.json").write_text(json.dumps({"name": "odd", "colour": "blue"}))
    with pytest.raises(TaskError, match="unknown keys: colour"):
        load_spec(str(tmp_path / "odd.json"))
    with pytest.raises(TaskError, match="does not exist"):
        load_spec(str(tmp_path / "missing.json"))


def test_facts_for_model_json_and_titles():
    spec = load_spec("chest_xray")
    facts = spec_facts(spec)
    assert "class_names" not in facts and set(facts) <= set(SPEC_KEYS)
    assert display_title(facts) == spec["short_title"]
    assert display_title({"task": "x"}) == "x"


def test_the_fracture_spec_carries_its_facts_into_model_json():
    spec = load_spec("fracture")
    assert spec["class_names"] == ["not_fractured", "fractured"]  # the positive class last
    assert spec["flip"] is True and spec["near_duplicates"] is True
    facts = spec_facts(spec)
    assert facts["split"]["policy"] == "listed" and facts["split"]["column"] == "official_split"
    assert facts["split"]["validation"] == ["valid"] and facts["split"]["index"] == "../index.csv"
    assert "multi-view" in facts["split"]["description"] and "no patient key" in facts["split"]["description"]
    assert facts["subgroups"] == {"index": "../index.csv", "columns": ["hardware", "multiscan", "hand", "leg", "hip", "shoulder"]}
    assert "10.6084/m9.figshare.22363012" in facts["source"]["citation"] and facts["source"]["licence"] == "CC BY 4.0"
    assert {"CR", "DX"} == set(facts["routing"]["modalities"])
    assert {"HAND", "WRIST", "KNEE", "HIP", "SHOULDER", "ANKLE"} <= set(facts["routing"]["body_parts"])
    assert "CHEST" not in facts["routing"]["body_parts"]
    limits = " ".join(facts["limits"])
    assert "89 of the 91" in limits and "Bangladesh" in limits and "No patient key" in limits
    assert display_title(facts) == "Radiograph — fracture"


def test_calibrate_scores_subgroups_the_task_spec_gained_after_training():
    """An older model folder recorded fewer subgroup columns than its task spec now lists; ``calibrate`` re-scores
    it by the union (recorded first), but never mixes in columns of another index or of a task it is not."""
    old = {"task": "fracture", "subgroups": {"index": "../index.csv", "columns": ["hardware", "multiscan"]}}
    assert current_subgroups(old) == {"index": "../index.csv",
                                      "columns": ["hardware", "multiscan", "hand", "leg", "hip", "shoulder"]}
    other_index = {"task": "fracture", "subgroups": {"index": "../elsewhere.csv", "columns": ["site"]}}
    assert current_subgroups(other_index) == other_index["subgroups"]
    assert current_subgroups({"task": "fracture"})["columns"][-1] == "shoulder"
    assert current_subgroups({"task": "chest_xray"}) is None  # its spec has no subgroups
    assert current_subgroups({"task": "my_own", "subgroups": {"index": "i.csv", "columns": ["a"]}})["columns"] == ["a"]


def test_the_shipped_fracture_card_reports_each_body_part():
    from core.tasks import TASKS_DIR as tasks

    folder = tasks.parent / "models" / "fracture"
    metrics = json.loads((folder / "metrics.json").read_text())
    card = (folder / "MODEL_CARD.md").read_text()
    for part in ("hand", "leg", "hip", "shoulder"):
        assert metrics["subgroups"][part]["1"]["n"] > 0
        assert f"  - {part} = 1: n {metrics['subgroups'][part]['1']['n']}, AUC" in card
    assert sum(metrics["subgroups"][part]["1"]["n"] for part in ("hand", "leg", "hip", "shoulder")) >= metrics["n"]


def test_a_fracture_radiograph_goes_to_the_fracture_model_by_its_header():
    from core.routing import route_by_header

    models = [(name, spec_facts(load_spec(name))) for name in ("chest_xray", "brain_mri", "fracture")]

    class Header:
        kind = "dicom"

        def __init__(self, modality, body_part):
            self.modality, self.body_part = modality, body_part

    assert route_by_header(Header("DX", "Wrist"), models).folder == "fracture"
    assert route_by_header(Header("CR", "KNEE"), models).folder == "fracture"
    assert route_by_header(Header("CR", "CHEST"), models).folder == "chest_xray"
    assert route_by_header(Header("CR", ""), models) is None  # two radiograph models: the outlier check decides
