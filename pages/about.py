"""About: what this tool is and is not, the model cards, data sources and licences, privacy, and
how to read a saliency map."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from core.card import source_text
from ui.runtime import through_app
from ui.scans import sample_sets
from ui.models import model_folders

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

def demoted(markdown: str, levels: int = 2) -> str:
    """A model card's headings pushed down, so they sit under this page's own headers."""
    return re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def model_facts(task: str, info: dict) -> str:
    """The key facts of a model folder's ``model.json`` as Markdown, for when it has no model card yet."""
    validation = info.get("validation", {})
    dataset = info.get("dataset", {})

    def number(key):
        value = validation.get(key)
        return "—" if value is None else f"{value:.3f}"

    lines = [
        f"- **Task:** {info.get('title', task)}",
        f"- **Classes:** {', '.join(info.get('class_names', []))}",
        f"- **Input:** {info.get('input_size', '?')} × {info.get('input_size', '?')} grey image",
        f"- **Data:** {source_text(info)}",
    ]
    if dataset.get("counts"):
        counts = ", ".join(f"{name} {count:,}" for name, count in dataset["counts"].items())
        removed = dataset.get("removed_duplicates", 0)
        lines.append(f"- **Training images used:** {counts} (duplicates removed: {removed})")
    lines.append(f"- **Validation** on {validation.get('n', '?')} held-out training-split images (not an "
                 f"independent test set): accuracy {number('accuracy')}, AUC {number('auc')}"
                 + (f", sensitivity {number('sensitivity')}, specificity {number('specificity')}"
                    if "sensitivity" in validation else "")
                 + f", calibration error (ECE) {number('ece')}")
    if validation.get("per_class_recall"):
        recall = ", ".join(f"{name} {value:.3f}" if value is not None else f"{name} —"
                           for name, value in validation["per_class_recall"].items())
        lines.append(f"- **Recall per class:** {recall}")
    if info.get("created"):
        lines.append(f"- **Trained:** {info['created']}, decision threshold {info.get('threshold', 0.5)}")
    return "\n".join(lines)


st.title("About")
st.warning("**This is a research and teaching tool, not a diagnostic device.** Its models were trained on small "
         "public datasets with known biases and have not been validated for clinical use. Do not use it to make "
         "or change any clinical decision.", icon=":material/warning:")

st.header("Models")
entries = model_folders()
if not entries:
    st.info("No model folder is installed yet, so there is nothing to describe.")
for tab, entry in zip(st.tabs([entry.title for entry in entries]) if entries else [], entries):
    with tab:
        if entry.problem:
            st.error(f"This model cannot be used: {entry.problem}")
            continue
        card = Path(entry.folder) / "MODEL_CARD.md"
        if card.is_file():
            st.container(border=True).markdown(demoted(card.read_text()))
            continue
        box = st.container(border=True)
        box.caption("Key facts from the model's own description (`model.json`); its model card is not written yet.")
        box.markdown(model_facts(entry.task, entry.info))

st.header("Data sources and licences")
sources = [f"- **{entry.title}:** {source_text(entry.info)}" for entry in entries if entry.info]
st.markdown("\n".join(sources + ["- **DICOM samples:** the test files shipped with the `pydicom` and "
                                  "`pydicom-data` packages (MIT licence)."]))
st.markdown("The training images themselves are not part of this tool; only the models trained on them, their "
            "training histories and a few sample cases are. The sample cases, with their licence and citation "
            "(also in a `LICENSE.md` beside the files in `assets/samples/`):")
st.markdown("\n".join(f"- **{spec['title']}:** {spec.get('citation', '')} Licence {spec.get('licence', 'unknown')}."
                       for spec in sample_sets()))

st.header("Privacy")
st.markdown("""
- A file you upload is kept **in memory, for your session only**. It is never written to disk, logged, or sent
  anywhere, and it is discarded when your session ends.
- Usage statistics are switched off: the dashboard sends nothing to Streamlit or anyone else.
- DICOM headers are **de-identified on display** following the DICOM PS3.15 Annex E basic application level
  confidentiality profile: names, identifiers, dates, institutions and UIDs are hidden unless you choose to
  reveal them for your own file.
""")
st.warning("Burned-in text is common in radiographs: names, dates and hospital marks are often part of the "
           "pixels themselves, where header de-identification cannot reach them. This tool therefore never "
           "claims that an image is anonymous — look at it before you share it.", icon=":material/visibility:")

st.header("How to read a saliency map")
st.markdown("""
A saliency map colours the parts of the image that most changed the model's score for **one chosen class**:
warm colours mark regions that pushed that score up.

- **Check the class.** A map explains one class; the map for *normal* and the map for *pneumonia* can differ.
- **Check the anatomy.** Does the hot area lie on a plausible finding (a lung opacity, a tumour), or on something
  that should not matter — a letter marker, burned-in text, the image border, a tube or a wire? The last are
  signs of a shortcut the model learned from its training data.
- **Compare methods.** Grad-CAM-family maps are coarse (computed on a small grid, then enlarged); SmoothGrad is
  fine-grained but noisy. Agreement between methods is more telling than any single map.
- **Mind the resolution.** The model sees a small, resized copy of the scan; a map cannot point at detail the
  model never saw.
""")
st.info("**A plausible map is not proof that the model is right.** It shows where the model looked, not whether "
        "its answer is correct or why; maps can look convincing for wrong predictions, and some methods draw them "
        "even for a model with random weights (Adebayo et al., *Sanity Checks for Saliency Maps*, NeurIPS 2018). "
        "An implausible map, on the other hand, is a good reason to distrust the prediction.",
        icon=":material/lightbulb:")
