"""core.registry: model folders from several roots, each with the outcome of its checks, never a crash.

Real model folders are written by ``core.model.save_model`` (a tiny Keras model) and then damaged
the ways a folder goes wrong: bad JSON, missing keys, a model file that does not match its SHA-256,
no model file, preprocessing the pipeline refuses, missing outlier statistics. ``ui.models.model_folders``
(what every page's picker reads) is checked over the default and the extra roots.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from core import registry
from core.registry import check_folder, discover, extra_roots, new_folder_path, output_root, slug, user_models_dir
from page_support import is_one_sentence


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    """One real, usable model folder (a tiny softmax CNN)."""
    import keras

    from core.model import save_model
    from core.preprocess import Pipeline

    inputs = keras.Input((16, 16, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    folder = tmp_path_factory.mktemp("good") / "good"
    save_model(model, folder, {"task": "good", "title": "Good model", "class_names": ["a", "b"],
                               "preprocessing": Pipeline(input_size=16).to_dict()})
    return folder


def damaged(good_folder, root, name, change):
    """A copy of the good folder in ``root/name`` with ``change(folder)`` applied."""
    folder = root / name
    shutil.copytree(good_folder, folder)
    change(folder)
    return folder


def edit_info(**updates):
    def change(folder):
        info = json.loads((folder / "model.json").read_text())
        for key, value in updates.items():
            if value is None:
                info.pop(key, None)
            else:
                info[key] = value
        (folder / "model.json").write_text(json.dumps(info))
    return change


DAMAGE = {
    "bad_json": (lambda f: (f / "model.json").write_text("{not json"), "is not valid JSON"),
    "not_an_object": (lambda f: (f / "model.json").write_text("[1, 2]"), "is not a JSON object"),
    "no_classes": (edit_info(class_names=None), "lacks 'class_names'"),
    "no_hash": (edit_info(sha256=None), "lacks 'sha256'"),
    "one_class": (edit_info(class_names=["only"]), "two or more different classes"),
    "bad_preprocessing": (edit_info(preprocessing={"input_size": 16, "std": 0}), "cannot be used"),
    "wrong_hash": (edit_info(sha256="0" * 64), "does not match the SHA-256"),
    "no_model_file": (lambda f: (f / "model.keras").unlink(), "has no model.keras"),
    "no_outlier_file": (edit_info(ood={"file": "ood.npz", "sha256": "0" * 64}), "outlier statistics"),
    "no_description": (lambda f: (f / "model.json").unlink(), "has no model.json"),
}


def test_every_damaged_folder_is_listed_with_its_reason(good_folder, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(good_folder, root / "a_good")
    for name, (change, _) in DAMAGE.items():
        damaged(good_folder, root, name, change)
    (root / "not_a_model").mkdir()  # no model.json, no model.keras: not a model folder at all
    (root / ".training").mkdir()  # where trainings in progress write: never listed
    shutil.copytree(good_folder, root / ".training" / "half_done")
    entries = {entry.name: entry for entry in discover([root])}
    assert set(entries) == {"a_good", *DAMAGE}
    assert entries["a_good"].usable and entries["a_good"].title == "Good model"
    assert entries["a_good"].origin == "trained" and not entries["a_good"].default
    for name, (_, expected) in DAMAGE.items():
        entry = entries[name]
        assert not entry.usable and expected in entry.problem, (name, entry.problem)
        assert is_one_sentence(entry.problem), entry.problem
    assert [e.name for e in registry.usable(list(entries.values()))] == ["a_good"]


def test_a_folder_replaced_after_a_check_is_checked_again(good_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(good_folder, folder)
    assert check_folder(folder).usable
    data = bytearray((folder / "model.keras").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.keras").write_bytes(bytes(data))
    os.utime(folder / "model.keras", ns=(1, 1))  # a different version of the file, whatever the clock
    assert "does not match the SHA-256" in check_folder(folder).problem


def test_roots_in_order_missing_ones_skipped_and_each_folder_once(good_folder, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        root.mkdir()
    shutil.copytree(good_folder, first / "m1")
    shutil.copytree(good_folder, second / "m2")
    entries = discover([first, tmp_path / "missing", second, first])
    assert [(e.name, e.root) for e in entries] == [("m1", first), ("m2", second)]


def test_extra_roots_come_from_the_setting_else_the_users_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDXAI_SETTINGS", str(tmp_path / "none.toml"))
    monkeypatch.delenv("MEDXAI_EXTRA_MODELS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert extra_roots() == [user_models_dir()] == [tmp_path / "data" / "medxai-dashboard" / "my-models"]
    monkeypatch.setenv("MEDXAI_EXTRA_MODELS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert extra_roots() == [tmp_path / "a", tmp_path / "b"] and output_root() == tmp_path / "a"
    monkeypatch.delenv("MEDXAI_EXTRA_MODELS")
    (tmp_path / "settings.toml").write_text(f'extra_models = ["{tmp_path / "c"}"]\n')
    monkeypatch.setenv("MEDXAI_SETTINGS", str(tmp_path / "settings.toml"))
    assert extra_roots() == [tmp_path / "c"]


def test_the_pickers_list_has_the_defaults_then_the_extra_models(good_folder, tmp_path, monkeypatch):
    from ui.models import model_folders

    defaults, extra = tmp_path / "defaults", tmp_path / "extra"
    defaults.mkdir()
    extra.mkdir()
    shutil.copytree(good_folder, defaults / "default_one")
    shutil.copytree(good_folder, extra / "mine")
    damaged(good_folder, extra, "broken", DAMAGE["wrong_hash"][0])
    monkeypatch.setenv("MEDXAI_MODELS", str(defaults))
    monkeypatch.setenv("MEDXAI_EXTRA_MODELS", str(extra))
    entries = model_folders()
    assert [(Path(e.folder).name, e.origin, e.problem is None) for e in entries] == [
        ("default_one", "default", True), ("broken", "trained", False), ("mine", "trained", True)]


def test_an_unreadable_settings_file_is_one_unusable_entry(tmp_path, monkeypatch):
    from ui.models import model_folders

    (tmp_path / "settings.toml").write_text("extra_models = \n")
    monkeypatch.setenv("MEDXAI_SETTINGS", str(tmp_path / "settings.toml"))
    monkeypatch.delenv("MEDXAI_EXTRA_MODELS", raising=False)
    monkeypatch.setenv("MEDXAI_MODELS", str(tmp_path / "no_defaults"))
    for entries in (model_folders(), discover()):
        assert len(entries) == 1 and entries[0].problem is not None
        assert "not valid TOML" in entries[0].problem


def test_new_folder_names_never_take_an_existing_or_reserved_one(tmp_path):
    assert slug("  Knee X-ray (v2)!  ") == "knee_x-ray_v2" and slug("***") == "model"
    (tmp_path / "knee").mkdir()
    (tmp_path / ".training" / "knee-2").mkdir(parents=True)  # reserved by a training in progress
    assert new_folder_path(tmp_path, "Knee") == tmp_path / "knee-3"


def test_a_teaching_model_is_never_offered_as_a_default(good_folder, tmp_path, monkeypatch):
    """The shortcut lesson's old chest model (``assets/teaching/chest_xray_shortcut``, issue 15) sits beside the
    default models' root, never in it: the picker (``ui.models.model_folders``) and :func:`discover` leave it out."""
    from core.teaching import TEACHING_DIR
    from ui import models
    from ui.teaching import shortcut_model_dir

    for name in ("MEDXAI_MODELS", "MEDXAI_EXTRA_MODELS", "MEDXAI_SHORTCUT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDXAI_SETTINGS", str(tmp_path / "none.toml"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    # the real layout: the teaching folder is no model root and lies in none
    assert shortcut_model_dir().parent == TEACHING_DIR
    for root in [models.models_dir(), *registry.model_roots()]:
        assert not TEACHING_DIR.resolve().is_relative_to(root.resolve()), root
        assert not root.resolve().is_relative_to(TEACHING_DIR.resolve()), root
    # the same layout with the teaching model installed: only the default is listed
    assets = tmp_path / "repo" / "assets"
    shutil.copytree(good_folder, assets / "models" / "chest_xray")
    shutil.copytree(good_folder, assets / "teaching" / "chest_xray_shortcut")
    monkeypatch.setattr(registry, "ASSETS_MODELS", assets / "models")
    monkeypatch.setattr(models, "ROOT", tmp_path / "repo")
    for folders in ([Path(e.folder) for e in models.model_folders()], [e.folder for e in discover()]):
        assert folders == [assets / "models" / "chest_xray"], folders
    assert [e.origin for e in models.model_folders()] == ["default"]
