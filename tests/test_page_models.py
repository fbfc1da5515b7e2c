"""pages/models.py through the real app (``app.py`` + ``st.navigation``) with AppTest: every model listed with
its availability, a Keras model imported through the page and then used by every page, and a training
started from the page that finishes and appears in the picker, or is cancelled and leaves nothing behind.

The default models are the committed ones; imports and trainings go into a temporary folder of extra
models (``MEDXAI_EXTRA_MODELS``). The models imported are built by ``tests/test_importer.py``'s builders:
a Sequential RGB softmax one, a nested Functional sigmoid one and one without a convolution. They are
explained on a real DICOM radiograph (``RG1_UNCI.dcm``) with every method.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, dicom_bytes
from core.jobs import STAGING, shared_queue
from core.saliency import METHODS
from page_support import assert_clean, figure, go, is_one_sentence, markdown_text, upload, widget
from test_importer import GOOD

pytestmark = pytest.mark.slow

TRAINING_SECONDS = 900
PER_CLASS = 8


@pytest.fixture(scope="module")
def extra(tmp_path_factory):
    """The folder of extra models the app writes into during these tests (and no settings file)."""
    root = tmp_path_factory.mktemp("extra_models")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDXAI_EXTRA_MODELS", str(root))
        patch.setenv("MEDXAI_SETTINGS", str(root.parent / "no-settings.toml"))
        patch.delenv("MEDXAI_MODELS", raising=False)  # the committed default models
        yield root


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    from core.runtime import quiet_tensorflow

    quiet_tensorflow()
    folder = tmp_path_factory.mktemp("page_keras")
    files = {}
    for name, (build, _) in GOOD.items():
        build().save(folder / f"{name}.keras")
        files[name] = (folder / f"{name}.keras").read_bytes()
    return files


@pytest.fixture(scope="module")
def tiny_dataset(chest_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("page_dataset")
    for name in ("NORMAL", "PNEUMONIA"):
        (root / name).mkdir()
        for path in sorted((chest_dir / name).glob("*.jpeg"))[:PER_CLASS]:
            (root / name / path.name).write_bytes(path.read_bytes())
    return root


def models_page(extra) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    go(at, "models")
    assert_clean(at)
    return at


def import_through_page(at, name: str, data: bytes, title: str, file_name: str | None = None, **choices):
    at.file_uploader(key="models_model_uploader").set_value((file_name or f"{name}.keras", data,
                                                             "application/octet-stream"))
    at.text_input(key="models_import_title").set_value(title)
    at.text_input(key="models_import_classes").set_value(choices.get("class_names", ""))
    at.number_input(key="models_import_size").set_value(choices.get("input_size", 0))
    at.selectbox(key="models_import_channels").set_value(choices.get("channels", 0))
    at.selectbox(key="models_import_range").set_value(choices.get("preprocess", "unit"))
    at.run()
    at.button(key="models_import_button").click().run()
    return at


def picker_titles(at) -> list[str]:
    return list(widget(at.selectbox, "Model").options)  # AppTest holds the options as shown: the titles


def choose_model(at, folder: Path) -> None:
    widget(at.selectbox, "Model").set_value(str(folder)).run()
    assert not at.exception, [e.value for e in at.exception]


# ----------------------------------------------------------------------------- the list

def test_every_model_is_listed_with_its_availability(extra):
    broken = extra / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    try:
        at = models_page(extra)
        table = at.dataframe[0].value
        rows = dict(zip(table["folder"], table["status"]))
        assert rows[str(broken)] == "unavailable"
        defaults = [folder for folder in rows if folder.startswith(str(REPO / "assets" / "models"))]
        shipped = sorted(p.parent for p in (REPO / "assets" / "models").glob("*/model.keras"))
        assert len(defaults) == len(shipped) == 3 and all(rows[f] == "available" for f in defaults)
        warnings = [w.value for w in at.warning]
        assert any("is not valid JSON" in w for w in warnings), warnings
        assert any("Research and teaching tool" in c.value for c in at.caption)
        # The picker shows only the usable ones.
        go(upload(go(at, "scan"), "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm")), "explain")
        assert "broken" not in picker_titles(at) and len(picker_titles(at)) == len(shipped)
    finally:
        broken.joinpath("model.json").unlink()
        broken.rmdir()


# ----------------------------------------------------------------------------- importing

PAGE_TITLES = {"rgb_sequential": "Page RGB", "nested_sigmoid": "Page sigmoid", "dense_only": "Page dense"}


@pytest.mark.parametrize("name", list(GOOD))
def test_a_model_imported_through_the_page_works_on_every_page(extra, keras_files, name):
    at = models_page(extra)
    title = PAGE_TITLES[name]
    import_through_page(at, name, keras_files[name], title, **GOOD[name][1])
    assert_clean(at)
    assert any(s.value.startswith(f"Imported {title}:") for s in at.success), [s.value for s in at.success]
    folder = extra / title.lower().replace(" ", "_")
    info = json.loads((folder / "model.json").read_text())
    assert info["imported"] and info["title"] == title
    assert title in list(at.dataframe[0].value["model"])
    assert any(e.label == f"{title} · imported" for e in at.expander)

    go(upload(go(at, "scan"), "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm")), "preprocessing")
    choose_model(at, folder)
    assert_clean(at)
    text = markdown_text(at)
    if info["channels"] == 3:  # the grey scan repeated on the model's three channels, said beside the step
        assert "**7. channels**" in text and "repeated on its three channels" in text
    else:
        assert "channels**" not in text

    go(at, "explain")
    choose_model(at, folder)
    assert_clean(at)
    methods = widget(at.radio, "Method")
    assert methods.options == ([METHODS["smoothgrad"]] if name == "dense_only" else list(METHODS.values()))
    if name == "dense_only":
        assert any("no convolution layer" in i.value for i in at.info)
    for label in methods.options:
        widget(at.radio, "Method").set_value(next(k for k, v in METHODS.items() if v == label)).run()
        assert_clean(at)
        assert any(label in str(chart.proto.spec) for chart in at.get("plotly_chart")), label
    for prefix in ("Score this map", "Run the sanity check"):
        buttons = [b for b in at.button if b.label.startswith(prefix)]
        assert buttons, f"no button starting {prefix!r}"
        buttons[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
    assert figure(at, "faithfulness_curves")["data"], "the deletion and insertion curves are drawn"
    assert any(m.label.startswith("Mean P(") for m in at.metric), "the uncertainty is shown"
    assert any(("passes on this scan" in s.value) for s in at.success) or \
        any("fails on this scan" in e.value for e in at.error)

    for page in ("history", "about"):
        go(at, page)
        assert_clean(at)


@pytest.mark.parametrize("file_name, data, expected", [
    ("random.keras", b"\x00\x01" * 3000, "not a Keras 3 model"),
    ("legacy.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 2000, "legacy HDF5"),
])
def test_a_bad_model_file_through_the_page_is_one_sentence(extra, file_name, data, expected):
    before = sorted(p.name for p in extra.iterdir())
    at = models_page(extra)
    import_through_page(at, "bad", data, "Bad one", file_name=file_name, class_names="a,b")
    assert not at.exception
    assert len(at.error) == 1 and expected in at.error[0].value and is_one_sentence(at.error[0].value)
    assert sorted(p.name for p in extra.iterdir()) == before


# ----------------------------------------------------------------------------- training

def start_training(at, *, name: str, epochs: int, folder: Path | None = None, archive: bytes | None = None):
    if archive is not None:
        at.radio(key="models_train_source").set_value("A zip of class folders").run()
        at.file_uploader(key="models_zip_uploader").set_value(("dataset.zip", archive, "application/zip"))
    else:
        at.radio(key="models_train_source").set_value("A folder on the server").run()
        at.text_input(key="models_train_folder").set_value(str(folder))
    at.text_input(key="models_train_name").set_value(name)
    at.number_input(key="models_train_epochs").set_value(epochs)
    at.selectbox(key="models_train_size").set_value(32)
    at.run()
    at.button(key="models_train_button").click().run()
    assert_clean(at)
    job = next(v for v in reversed(shared_queue().views()) if v.title == name)
    return job


def test_a_training_started_from_the_page_finishes_and_appears_in_the_picker(extra, tiny_dataset):
    at = models_page(extra)
    job = start_training(at, name="Page trained", epochs=1, folder=tiny_dataset)
    assert at.subheader and any(s.value == "Your trainings" for s in at.subheader)
    shown = markdown_text(at) + "".join(i.value for i in at.info)
    assert "**Page trained**" in shown
    done = shared_queue().wait(job.id, timeout=TRAINING_SECONDS)
    assert done.state == "finished", (done.error, done.last_lines())
    at.run()
    assert_clean(at)
    finished = [s.value for s in at.success if s.value.startswith("Finished: Page trained is in the model picker")]
    assert finished and "calibrated" in finished[0]
    assert "Page trained" in list(at.dataframe[0].value["model"])
    assert (extra / "page_trained" / "model.keras").is_file()

    go(upload(go(at, "scan"), "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm")), "explain")
    assert "Page trained" in picker_titles(at)
    choose_model(at, extra / "page_trained")
    show = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
    if show:  # calibrated with an outlier check: an adult radiograph may be out of its range
        show[0].click().run()
    assert not at.exception

    go(at, "history")
    assert_clean(at)
    at.radio[0].set_value("page_trained").run()
    assert_clean(at)
    assert list(at.dataframe[0].value["run"]) == [f"{extra.name}/page_trained"]


def dataset_zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*.jpeg")):
            archive.write(path, f"my_data/{path.relative_to(folder)}")
    return buffer.getvalue()


def test_a_cancelled_training_leaves_nothing_behind(extra, tiny_dataset, tmp_path, monkeypatch):
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where the zip is unpacked
    before = sorted(p.name for p in extra.iterdir() if p.name != STAGING)
    at = models_page(extra)
    job = start_training(at, name="Page cancelled", epochs=200, archive=dataset_zip(tiny_dataset))
    assert len(list(private.iterdir())) == 1, "the zip is unpacked into one private folder"
    deadline = time.monotonic() + TRAINING_SECONDS
    while shared_queue().view(job.id).epochs_done < 1:  # its first epoch is in history.csv
        assert time.monotonic() < deadline and shared_queue().view(job.id).active, shared_queue().view(job.id)
        time.sleep(0.5)

    # The Training history page shows its curves while it runs.
    go(at, "history")
    assert_clean(at)
    at.radio[0].set_value(job.name).run()
    assert_clean(at)
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Training now:") and "of 200 epochs done" in c for c in captions), captions
    assert [f["layout"]["title"]["text"] for f in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
            ][:3] == ["Loss", "Accuracy", "AUC"]

    go(at, "models")
    running = [p for p in at.get("progress") if "epochs done" in p.proto.text]
    assert running, "the Models page shows its progress"
    at.button(key=f"models_cancel_{job.id}").click().run()
    assert_clean(at)
    assert any(i.value.startswith("Cancelled") for i in at.info)
    assert shared_queue().view(job.id).state == "cancelled"
    assert list(private.iterdir()) == []
    assert sorted(p.name for p in extra.iterdir() if p.name != STAGING) == before
    assert not (extra / STAGING).exists() or list((extra / STAGING).iterdir()) == []


def test_a_failed_training_shows_its_last_lines_on_the_page(extra, tiny_dataset, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    (broken / "NORMAL" / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x17" * 100)
    at = models_page(extra)
    job = start_training(at, name="Page broken", epochs=1, folder=broken)
    ended = shared_queue().wait(job.id, timeout=TRAINING_SECONDS)
    assert ended.state == "failed", (ended.state, ended.last_lines())
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error if e.value.startswith("The training failed:")]
    assert len(errors) == 1 and "damaged.png" in errors[0] and "Traceback" not in errors[0], errors
    shown = [c.value for c in at.code]
    assert any("damaged.png" in c for c in shown), shown  # its last lines, under the sentence
    assert not (extra / "page_broken").exists()
    assert not (extra / STAGING).exists() or list((extra / STAGING).iterdir()) == []


def test_a_second_sessions_training_waits_with_its_place_in_line(extra, tiny_dataset):
    first, second = models_page(extra), models_page(extra)  # two sessions (each its own owner token)
    running = start_training(first, name="Queue first", epochs=200, folder=tiny_dataset)
    try:
        assert shared_queue().wait(running.id, timeout=60, states=("running", "calibrating", "finished", "failed",
                                                                  "cancelled")).state == "running"
        waiting = start_training(second, name="Queue second", epochs=1, folder=tiny_dataset)
        assert shared_queue().view(waiting.id).position == 1
        infos = [i.value for i in second.info]
        assert any(i.startswith("Queued: number 1 in line, 1 training ahead of it") for i in infos), infos
        assert any(c.value == "Also on the server's queue: 1 training of other sessions." for c in second.caption)
        first.run()
        assert not first.exception
        assert not any(i.value.startswith("Queued") for i in first.info), "the first session's own one is running"
        assert any(c.value == "Also on the server's queue: 1 training of other sessions." for c in first.caption)
        second.button(key=f"models_cancel_{waiting.id}").click().run()
        assert shared_queue().view(waiting.id).state == "cancelled"
    finally:
        for view in shared_queue().views():
            if view.title in ("Queue first", "Queue second") and view.active:
                shared_queue().cancel(view.id)
                shared_queue().wait(view.id, timeout=60)
    assert not (extra / STAGING).exists() or list((extra / STAGING).iterdir()) == []
