"""core.card: a model card is written from the run folder's own files, with no task named in code."""

from __future__ import annotations

import json
import shutil

import pytest

from core.card import render_card, source_text

pytestmark = pytest.mark.slow


def test_card_of_a_trained_run_reads_its_facts_from_model_json(tiny_run, tmp_path):
    folder = shutil.copytree(tiny_run[0], tmp_path / "run")
    card = render_card(folder)
    info = json.loads((folder / "model.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert card.startswith(f"# Model card: {info['title']}")
    assert "not a diagnostic device" in card
    assert info["source"]["citation"] in card and "CC BY 4.0" in card
    assert info["split"]["description"] in card
    for limit in info["limits"]:
        assert limit in card
    assert f"SHA-256 `{info['sha256']}`" in card
    assert f"Accuracy {100 * metrics['accuracy']:.1f}%" in card
    assert "python -m core train --task chest_xray" in card


def test_the_same_run_described_as_another_task_changes_only_its_facts(tiny_run, tmp_path):
    """A user's task: the card says what its model.json says, and nothing about chest X-rays."""
    folder = shutil.copytree(tiny_run[0], tmp_path / "knees")
    info = json.loads((folder / "model.json").read_text())
    info.update(task="knees", title="Knee MRI: tear or not", source={"citation": "Our own knees, 2026."},
                split={"policy": "file", "description": "split by file"}, limits=["Only our scanner."],
                flip=True)
    (folder / "model.json").write_text(json.dumps(info))
    card = render_card(folder)
    assert "Knee MRI: tear or not" in card and "Our own knees, 2026." in card and "Only our scanner." in card
    assert "horizontal flips" in card and "Kermany" not in card and "Paediatric" not in card


def test_source_text_without_a_source():
    assert source_text({"dataset": {"path": "/data/x"}}) == "Class-folder dataset at `/data/x`."


def test_a_frozen_run_with_only_clean_and_mirrored_views_is_not_said_to_have_seen_degradations():
    from core.card import _degraded_views

    mirror2 = {"degrade": True, "frozen_backbone": {"views": 2, "view_kind": "mirror"}}
    assert not _degraded_views(mirror2, flip=True)
    assert _degraded_views(mirror2, flip=False)  # no mirror without flips: the second view is a degraded draw
    assert _degraded_views({"degrade": True, "frozen_backbone": {"views": 3, "view_kind": "mirror"}}, flip=True)
    assert _degraded_views({"degrade": True, "frozen_backbone": {"views": 2, "view_kind": "augment"}}, flip=True)
    assert _degraded_views({"degrade": True}, flip=True)
