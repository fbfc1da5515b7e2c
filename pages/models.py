"""Models: every model folder with its card and whether it can be used; import a Keras model; train one.

Imports and trainings are written into the first folder of extra models (:func:`core.registry.output_root`);
the trainings run one at a time on the server's queue (:func:`core.jobs.shared_queue`), which every
session shares, so a training started here never blocks this or another session.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from core.importer import PREPROCESS, PREPROCESS_TEXT, ModelImportError, import_model
from core.jobs import MIN_PER_CLASS, JobError, dataset_from_zip, shared_queue
from core.registry import new_folder_path, output_root
from core.settings import SettingsError
from ui.layout import disclaimer
from ui.models import model_folders
from ui.runtime import through_app
from ui.state import Keys

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

REFRESH_SECONDS = 2.0
INPUT_SIZES = (32, 64, 96, 128, 160, 192, 224, 256)
ORIGIN = {"default": "default", "imported": "imported", "trained": "trained", "settings": "settings"}
CHANNELS = {0: "As the model states", 1: "1 (grey)", 3: "3 (RGB: the grey scan repeated on each channel)"}


def demoted(markdown: str, levels: int = 2) -> str:
    """A model card's headings pushed down, so they sit under this page's own headers."""
    return re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def kind(entry) -> str:
    if entry.origin == "trained" and (entry.info or {}).get("trained_here"):
        return "trained here"
    return ORIGIN.get(entry.origin, entry.origin)


def summary_row(entry) -> dict:
    info = entry.info or {}
    pipeline = info.get("preprocessing") or {}
    size = pipeline.get("input_size") or info.get("input_size")
    return {"model": entry.title, "kind": kind(entry),
            "status": "available" if entry.problem is None else "unavailable",
            "classes": ", ".join(info.get("class_names") or []),
            "input": f"{size} x {size} x {pipeline.get('channels', 1)}" if size else "",
            "calibrated": "yes" if info.get("temperature") is not None else "no",
            "folder": entry.folder}


def target_root() -> Path | None:
    try:
        return output_root()
    except SettingsError as err:
        st.error(f"Nowhere to write the model: {err}")
        return None


# ----------------------------------------------------------------------------- page

st.title("Models")
disclaimer()
queue = shared_queue()
owner = st.session_state.setdefault(Keys.MODELS_OWNER, uuid.uuid4().hex)

listed, importing, training = st.tabs(["Models", "Import a Keras model", "Train a model"])

with listed:
    entries = model_folders()
    st.caption("Every model folder the dashboard knows: the default models, then those in the folders of extra "
               "models. Only available ones are offered on the Preprocessing and Explain pages.")
    if not entries:
        st.info("No model folder is installed yet.")
    else:
        st.dataframe(pd.DataFrame([summary_row(e) for e in entries]), hide_index=True)
    for entry in entries:
        label = f"{entry.title} · {kind(entry)}" + (" · unavailable" if entry.problem else "")
        with st.expander(label, expanded=bool(entry.problem)):
            if entry.problem:
                st.warning(f"Unavailable: {entry.problem}")
                continue
            st.caption(f"Folder `{entry.folder}`")
            card = Path(entry.folder) / "MODEL_CARD.md"
            if card.is_file():
                st.markdown(demoted(card.read_text()))
            else:
                st.caption("This model has no model card (MODEL_CARD.md) yet.")

with importing:
    st.markdown("Upload a Keras 3 image classifier (`.keras`, saved with `model.save('model.keras')`) and say what it "
                "expects. The model is checked, rebuilt as one flat Functional model (what the saliency methods need), "
                "compared with the original on random inputs, and written as a model folder with its model card.")
    uploaded = st.file_uploader("Keras 3 model file (.keras)", type=["keras", "h5", "hdf5"], key=Keys.IMPORT_UPLOADER,
                                help="Loaded in memory with Keras safe_mode; only the model folder is written.")
    left, right = st.columns(2)
    title = left.text_input("Name shown in the dashboard", key=Keys.IMPORT_TITLE,
                            placeholder=Path(uploaded.name).stem if uploaded else "My model")
    classes = right.text_input("Class names, in the order of the model's outputs", key=Keys.IMPORT_CLASSES,
                               placeholder="normal, abnormal",
                               help="For a single sigmoid output: the negative class, then the positive one.")
    size = left.number_input("Input size in pixels (0: as the model states)", 0, 1024, 0, key=Keys.IMPORT_SIZE)
    channels = right.selectbox("Input channels", list(CHANNELS), format_func=CHANNELS.get, key=Keys.IMPORT_CHANNELS)
    value_range = left.selectbox("Input range the model was trained on", list(PREPROCESS),
                                 format_func=PREPROCESS_TEXT.get, key=Keys.IMPORT_RANGE)
    clahe = right.checkbox("Add CLAHE contrast enhancement to the pipeline", key=Keys.IMPORT_CLAHE)
    if st.button("Import the model", type="primary", disabled=uploaded is None, key=Keys.IMPORT_BUTTON):
        root = target_root()
        if root is not None:
            name = title.strip() or Path(uploaded.name).stem
            with st.spinner("Checking and rebuilding the model…"):
                try:
                    result = import_model(uploaded.getvalue(), class_names=classes, out=new_folder_path(root, name),
                                          input_size=int(size) or None, channels=channels or None, preprocess=value_range,
                                          contrast="clahe" if clahe else None, title=name, file_name=uploaded.name)
                except ModelImportError as err:
                    st.error(str(err))
                else:
                    st.session_state[Keys.MODELS_IMPORTED] = result.summary()
                    st.rerun()  # the list and every picker now hold the model
    if st.session_state.get(Keys.MODELS_IMPORTED):
        st.success(st.session_state[Keys.MODELS_IMPORTED])

with training:
    st.markdown("Train this project's CNN on your own class-folder dataset: one sub-folder of images per class, "
                f"named after the class, with at least {MIN_PER_CLASS} images each (15% are kept for validation). "
                "The training runs on the server in the background, one at a time; the finished model is "
                "calibrated on its validation split and appears in the model picker.")
    source = st.radio("Dataset", ["A folder on the server", "A zip of class folders"], horizontal=True,
                      key=Keys.TRAIN_SOURCE)
    if source == "A folder on the server":
        folder = st.text_input("Dataset folder on the server", key=Keys.TRAIN_FOLDER,
                               placeholder="/data/knee_xray (with one sub-folder per class)")
        archive = None
    else:
        folder = ""
        archive = st.file_uploader("Zip of class folders", type=["zip"], key=Keys.TRAIN_ZIP_UPLOADER,
                                   help="Unpacked into a private temporary folder on the server and removed when "
                                        "the training ends; never logged or kept.")
    left, middle, right = st.columns([2, 1, 1])
    name = left.text_input("Model name", key=Keys.TRAIN_NAME, placeholder="My classifier")
    epochs = middle.number_input("Epochs", 1, 200, 10, key=Keys.TRAIN_EPOCHS)
    input_size = right.selectbox("Input size", INPUT_SIZES, index=INPUT_SIZES.index(128), key=Keys.TRAIN_SIZE,
                                 format_func=lambda s: f"{s} x {s}")
    if st.button("Start training", type="primary", key=Keys.TRAIN_BUTTON,
                 disabled=not (folder.strip() or archive is not None)):
        root = target_root()
        if root is not None:
            try:
                temp = None
                if archive is not None:
                    with st.spinner("Unpacking the dataset…"):
                        temp = dataset_from_zip(archive.getvalue())
                queue.submit(data=temp or Path(folder.strip()).expanduser(),
                             title=name.strip() or (Path(archive.name).stem if archive else Path(folder).name),
                             out_root=root, epochs=int(epochs), input_size=int(input_size), owner=owner,
                             temp_dir=temp)
            except JobError as err:
                st.error(str(err))

    @st.fragment(run_every=REFRESH_SECONDS if any(v.active for v in queue.views(owner)) else None)
    def trainings() -> None:
        """This session's trainings, refreshed every few seconds while one is queued or running."""
        mine = queue.views(owner)
        ended = st.session_state.setdefault(Keys.MODELS_ENDED, set())
        if any(v.id not in ended and not v.active for v in mine):
            ended.update(v.id for v in mine if not v.active)
            st.rerun()  # a training ended: redraw the whole page (list of models, pickers)
        others = sum(1 for v in queue.views() if v.active and v.owner != owner)
        if not mine:
            st.caption("No training started in this session yet."
                       + (f" {others} training{'s' if others != 1 else ''} of other sessions "
                          f"{'is' if others == 1 else 'are'} on the server's queue." if others else ""))
            return
        st.subheader("Your trainings")
        running = queue.running()
        for view in reversed(mine):
            with st.container(border=True):
                st.markdown(f"**{view.title}** · {view.epochs} epoch{'s' if view.epochs != 1 else ''}, "
                            f"input {view.input_size} x {view.input_size}")
                if view.state == "queued":
                    ahead = (view.position or 1) - 1 + (1 if running else 0)
                    st.info(f"Queued: number {view.position} in line, {ahead} training{'s' if ahead != 1 else ''} "
                            "ahead of it (the server trains one model at a time).")
                elif view.state == "running":
                    st.progress(min(1.0, view.epochs_done / max(view.epochs, 1)),
                                text=f"Training: {view.epochs_done} of {view.epochs} epochs done")
                    st.caption("Its learning curves update live on the Training history page.")
                elif view.state == "calibrating":
                    st.progress(1.0, text="Calibrating on the validation split…")
                elif view.state == "finished":
                    st.success(f"Finished: {view.title} is in the model picker"
                               + (", calibrated on its validation split." if view.calibrated else
                                  f" (not calibrated: {view.not_calibrated or 'reason unknown'}).")
                               + f" Folder `{view.model_folder}`.")
                elif view.state == "failed":
                    st.error(f"The training failed: {view.error}")
                    st.code("\n".join(view.last_lines()) or "(no output)", language=None)
                else:
                    st.info("Cancelled: its partial run and its dataset copy were removed.")
                if view.active:
                    if st.button("Cancel", key=f"{Keys.TRAIN_CANCEL}_{view.id}"):
                        with st.spinner("Cancelling…"):
                            queue.cancel(view.id, owner)
                            queue.wait(view.id, timeout=30)
                        st.rerun()
                elif st.button("Remove from the list", key=f"{Keys.TRAIN_FORGET}_{view.id}"):
                    queue.forget(view.id, owner)
                    ended.discard(view.id)
                    st.rerun(scope="fragment")
        if others:
            st.caption(f"Also on the server's queue: {others} training{'s' if others != 1 else ''} of other sessions.")

    trainings()
