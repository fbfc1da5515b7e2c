"""Shared fixtures: where the real data lives, DICOM test files, one tiny trained model, one real PACS.

The shared data is read in place (``MEDXAI_DATA`` or ``<repo>/../shared/data``), never copied
into the repository. DICOM files come from ``pydicom`` / ``pydicom-data``, offline.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No background thread loading the default models behind the AppTest page tests (app.py starts
# one per process); tests/test_browser.py turns it back on for its real server.
os.environ["MEDXAI_WARM_UP"] = "0"

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MEDXAI_DATA") or REPO.parent / "shared" / "data").resolve()
CHEST = DATA_DIR / "chest_xray" / "train"
CHEST_FULLRES = DATA_DIR / "chest_xray_fullres"

#: The tiny model every model, train and CLI test shares: trains in seconds on a CPU.
TINY = {"input_size": 32, "width": 8, "limit_per_class": 20, "epochs": 1, "batch_size": 16}


def dicom_path(name: str) -> Path:
    """Path of a pydicom / pydicom-data test file, e.g. ``dicom_path("CT_small.dcm")``."""
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns when it cannot reach its download mirror
        path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(path)


def dicom_bytes(name: str) -> bytes:
    return dicom_path(name).read_bytes()


def slice_ablation(loaded, root: Path, image: str) -> dict:
    """``explain-eval``'s fill of one outlined slice (``image`` as ``class/N.jpg`` under ``root/images``, its mask
    under ``root/masks``): :func:`core.evaluation.outline_ablation` for its true class, what the scripts' rows
    must agree with."""
    from core.evaluation import outline_ablation
    from core.io import load_scan
    from core.masks import load_mask

    path = root / "images" / image
    scan = load_scan(path.read_bytes(), path.name)
    mask = load_mask((root / "masks" / image).with_suffix(".png").read_bytes(), scan.shape)
    return outline_ablation(loaded, scan, mask, loaded.class_names.index(image.split("/")[0]))


def dicom_names(pattern: str) -> list[str]:
    """Names of the installed test files matching ``pattern`` (e.g. ``"MR_small*"``)."""
    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted({Path(p).name for p in get_testdata_files(pattern)})


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not CHEST.is_dir():
        pytest.skip(f"shared data not found at {DATA_DIR} (set MEDXAI_DATA)")
    return DATA_DIR


@pytest.fixture(scope="session")
def chest_dir(data_dir) -> Path:
    return data_dir / "chest_xray" / "train"


@pytest.fixture(scope="session")
def fullres_dir(data_dir) -> Path:
    return data_dir / "chest_xray_fullres"


@pytest.fixture(scope="session")
def tiny_run(chest_dir, tmp_path_factory):
    """A run folder trained once per session on 20 real images per class: (folder, metrics, log)."""
    from core.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_run")
    lines: list[str] = []
    config = TrainConfig(task="chest_xray", data=str(chest_dir), out=str(out), **TINY)
    metrics = train(config, log=lines.append)
    return out, metrics, lines


@pytest.fixture(scope="session")
def head_masked_models(data_dir, tmp_path_factory):
    """A models root holding one tiny brain model trained with ``--head-mask 0.12`` on 8 real slices per class
    (trained once per session): the root, and the model folder ``<root>/brain_mri``."""
    from core.train import TrainConfig, train

    root = tmp_path_factory.mktemp("head_masked_models")
    train(TrainConfig(task="brain_mri", data=str(data_dir / "brain_mri" / "Training"), out=str(root / "brain_mri"),
                      head_mask=0.12, **{**TINY, "limit_per_class": 8}), log=lambda line: None)
    return root


# ----------------------------------------------------------------------------- a real PACS (Orthanc)

#: Real files the session's Orthanc holds from its start: CT and MR slices, a CR radiograph, a JPEG 2000
#: image, and two objects without pixels (an RT plan and a structured report).
ORTHANC_FILES = ("CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm", "JPEG2000.dcm", "rtplan.dcm", "test-SR.dcm")


@pytest.fixture(scope="session")
def orthanc():
    """One real Orthanc (Debian's, ``tests/orthanc.py``) on loopback for the whole session, loaded with
    :data:`ORTHANC_FILES`; stopped and removed at the end.

    Tests that store objects of their own give them new UIDs and a study date of their own, so searches
    over these files find the same rows whatever ran before. Without Orthanc installed the tests that use
    it are skipped with the reason (``scripts/setup.sh --browser`` installs it); under CI (``$CI`` set)
    they fail instead, so a runner without it cannot pass silently.
    """
    from orthanc import OrthancUnavailable, running_orthanc

    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_orthanc())
        except OrthancUnavailable as err:
            reason = str(err).splitlines()[0]
            if os.environ.get("CI"):
                pytest.fail(f"{reason} CI must run the DICOMweb tests.")
            pytest.skip(reason)
        for name in ORTHANC_FILES:
            server.upload(dicom_path(name))
        yield server
        server.stop(graceful=False)  # its data is thrown away: no need to wait for Orthanc's 2.5 s shutdown


@pytest.fixture(scope="session")
def pacs(orthanc) -> dict:
    """The headers of the files the session's Orthanc holds: {file name: pydicom.Dataset without pixels}."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: pydicom.dcmread(dicom_path(name), stop_before_pixels=True) for name in ORTHANC_FILES}


# ----------------------------------------------------------------------------- the dashboard's models

@pytest.fixture(scope="session")
def models_root(request, tmp_path_factory) -> Path:
    """The folder the app reads its models from during the page tests."""
    from page_support import DEFAULT_MODELS, real_models_present, tiny_models

    if real_models_present():
        return DEFAULT_MODELS
    return tiny_models(request.getfixturevalue("data_dir"), tmp_path_factory)


@pytest.fixture
def app(models_root, monkeypatch):
    """A fresh AppTest of the whole app (first page: Scan), reading models from ``models_root``."""
    from streamlit.testing.v1 import AppTest

    from page_support import APP, DEFAULT_MODELS, assert_clean

    if models_root == DEFAULT_MODELS:
        monkeypatch.delenv("MEDXAI_MODELS", raising=False)
    else:
        monkeypatch.setenv("MEDXAI_MODELS", str(models_root))
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    assert_clean(at)
    return at




# ----------------------------------------------------------------------------- the teaching pages (Lesson, Quiz, Classroom)

@pytest.fixture
def class_dir(tmp_path, monkeypatch) -> Path:
    """The embedded class database's folder for this test (a real SQLite file is made there)."""
    from ui.teaching import _store

    folder = tmp_path / "classes"
    for name in ("MEDXAI_CLASS_DB", "MEDXAI_CLASS_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDXAI_CLASS_DIR", str(folder))
    monkeypatch.setenv("MEDXAI_SETTINGS", str(tmp_path / "no-settings.toml"))
    _store.clear()  # a store cached by an earlier test points at another folder
    yield folder
    _store.clear()


@pytest.fixture
def teaching_env(models_root, monkeypatch):
    """The app's models are ``models_root``; returns a factory of fresh AppTest sessions."""
    from streamlit.testing.v1 import AppTest

    from page_support import APP, DEFAULT_MODELS

    if models_root == DEFAULT_MODELS:
        monkeypatch.delenv("MEDXAI_MODELS", raising=False)
    else:
        monkeypatch.setenv("MEDXAI_MODELS", str(models_root))

    def new_session(page: str | None = None):
        at = AppTest.from_file(str(APP), default_timeout=300)
        at.run()
        if page:
            at.switch_page(f"pages/{page}.py").run()
        return at

    return new_session


@pytest.fixture
def stand_in_shortcut(models_root, tmp_path, monkeypatch) -> Path:
    """Until the old chest model is installed in assets/teaching/chest_xray_shortcut: a copy of the current
    chest model in a temporary folder, given to the page through ``MEDXAI_SHORTCUT_MODEL``."""
    import shutil

    folder = tmp_path / "chest_xray_shortcut"
    shutil.copytree(models_root / "chest_xray", folder)
    monkeypatch.setenv("MEDXAI_SHORTCUT_MODEL", str(folder))
    return folder


@pytest.fixture
def media(monkeypatch):
    """Every media file (images, downloads) the app stores while the test runs: {id: bytes}."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.media_file_manager import MediaFileManager

    managers = []

    class Recording(MediaFileManager):
        def __init__(self, storage):
            super().__init__(storage)
            managers.append(self)

    monkeypatch.setattr(app_test, "MediaFileManager", Recording)

    def stored() -> dict[str, bytes]:
        return {file_id: f.content for m in managers for file_id, f in getattr(m._storage, "_files_by_id", {}).items()}

    return stored


# ----------------------------------------------------------------------------- two workers (pytest-xdist)

#: Modules whose tests share the session's one Orthanc: they run on the same worker, so it starts once.
ORTHANC_GROUP = "orthanc"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """pytest.ini runs the suite on two workers (``-n 2 --dist loadgroup``). Each test module is one group, so
    its module fixtures (a dashboard server, a browser, a trained model) are made once, on one worker, and its
    tests run in their written order; every module that uses the real PACS joins one group, so the session's
    Orthanc starts once. Without pytest-xdist the markers do nothing."""
    pacs_modules = {item.module.__name__ for item in items if "orthanc" in getattr(item, "fixturenames", ())}
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(ORTHANC_GROUP if module in pacs_modules else module))
