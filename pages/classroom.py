"""Classroom: the teacher opens a class (a short code on screen), students join it on the Quiz page, and
their answers appear here live: per case, where they clicked beside the model's map and the expert
outline, how many agreed with the model, and where the class and the model were both wrong.

Only the session that opened the class (it holds the teacher key) may end or delete it. The live view
polls the class's change counter every two seconds and redraws only when it has changed.
"""

from datetime import datetime, timezone

import streamlit as st

from core.classroom import ClassError, new_teacher_key
from core.quiz import QuizError, choose_cases
from core.render import draw_outline, overlay, png_bytes
from core.settings import setting
from core.teaching import click_heatmap, draw_marker, spoken_label
from ui.layout import disclaimer
from ui.runtime import through_app
from ui.state import Keys
from ui.teaching import (
    CLICK_COLOUR,
    OUTLINE_COLOUR,
    case_display,
    case_map,
    case_mask,
    case_scan,
    class_store,
    model_answers,
    model_for,
    picture,
    quiz_pool_cases,
    quiz_spec,
    small,
    teaching_samples,
)

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

PANEL_SIDE = 360

st.title("Classroom")
disclaimer()
st.markdown("Open a class for the room: students join on the **Quiz** page (*In a class*) with the code shown here "
            "and a nickname, and their answers appear below as they come in. The class database keeps only "
            "nicknames, clicks and answers; no scan leaves the server.")
store = class_store()
spec = quiz_spec()
if store is None or spec is None:
    st.stop()
pool = quiz_pool_cases()
if not pool:
    st.error("No class can be opened: the models for the curated cases are not installed.")
    st.stop()
by_id = {case.case_id: case for case in pool}
METHOD = spec.get("method", "gradcam")


# ----------------------------------------------------------------------------- opening or resuming

def open_or_resume() -> None:
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Open a new class")
        title = st.text_input("Title (optional)", max_chars=80, key=Keys.TEACHER_TITLE,
                              placeholder="Radiology teaching, Tuesday")
        a, b, c = st.columns(3)
        count = a.number_input("Cases", 1, len(pool), min(int(spec.get("defaults", {}).get("cases", 8)), len(pool)),
                               key=Keys.TEACHER_COUNT)
        seed = b.number_input("Seed", 0, 10 ** 9, int(spec.get("defaults", {}).get("seed", 2026)), key=Keys.TEACHER_SEED)
        try:
            default_days = float(setting("class_days") or 7)
        except ValueError:
            default_days = 7.0
        days = c.number_input("Days it lasts", 0.01, 365.0, min(max(default_days, 0.01), 365.0), key=Keys.TEACHER_DAYS,
                              help="After this the class and every answer in it are deleted.")
        st.caption("The cases are a seeded, reproducible mix of difficulty that always includes cases the model in use "
                   "gets wrong; the first one is a case it gets right. The same seed gives the same cases again.")
        if st.button("Open the class", type="primary"):
            try:
                chosen = choose_cases(pool, n=int(count), seed=int(seed))
                key = new_teacher_key()
                room = store.open_class([c.case_id for c in chosen], title=title or None, seed=int(seed),
                                        expires_days=float(days), teacher=key)
            except (QuizError, ClassError) as err:
                st.error(str(err))
                return
            st.session_state[Keys.TEACHER] = {"code": room.code, "key": key}
            st.rerun()
    with right:
        st.subheader("Resume a class")
        st.caption("After a reload or a server restart: the class code and the teacher key shown when it was opened.")
        code = st.text_input("Class code", max_chars=12, key=Keys.RESUME_CODE)
        key = st.text_input("Teacher key", type="password", key=Keys.RESUME_KEY)
        if st.button("Resume"):
            try:
                room = store.get_class(code)
                if not store.is_teacher(room.code, key or None):
                    raise ClassError(f"That is not the teacher key of class {room.code}; check it and try again.")
            except ClassError as err:
                st.error(str(err))
                return
            st.session_state[Keys.TEACHER] = {"code": room.code, "key": key}
            st.rerun()


# ----------------------------------------------------------------------------- the live view

def class_cases(case_ids) -> list:
    return [by_id[i] for i in case_ids if i in by_id]


def clicks_picture(display, mask, clicks) -> tuple:
    """The scan with the class's clicks as a heat map and a dot each, and the outline."""
    shown = small(display, PANEL_SIDE)
    scale = display.shape[0] / shown.shape[0]
    heat = click_heatmap(clicks, shown.shape, scale=scale)
    rgb = overlay(shown, heat, opacity=0.75, colormap="Hot") if clicks else None
    points = tuple((point, CLICK_COLOUR) for point in clicks)
    if rgb is None:
        return picture(display, mask=mask, side=PANEL_SIDE)
    if mask is not None:
        rgb = draw_outline(rgb, small(mask.astype("float32"), PANEL_SIDE) >= 0.5, colour=OUTLINE_COLOUR)
    for (row, col), colour in points:
        rgb = draw_marker(rgb, (int(row / scale), int(col / scale)), colour=colour, radius=3, thickness=2)
    return rgb


def build_view(code: str, cases: list) -> dict:
    """Everything the live view draws for this version of the class (pictures included)."""
    summary = store.class_summary(code, cases)
    samples = teaching_samples()
    answers = model_answers()
    panels = []
    for case, stats in zip(cases, summary["cases"]):
        sample = samples[case.image_ref]
        scan = case_scan(sample)
        display = case_display(scan)
        mask = case_mask(sample, scan)
        names = list(answers[case.image_ref].probabilities)
        result = case_map(model_for(sample), sample, METHOD, names.index(case.model_label))
        panels.append({"case": case, "stats": stats, "clicks": png_bytes(clicks_picture(display, mask, stats["clicks"])),
                       "map": png_bytes(picture(display, saliency=result.on_scan, mask=mask, side=PANEL_SIDE))})
    return {"summary": summary, "panels": panels}


def share(value) -> str:
    return "—" if value is None else f"{value:.0%}"


def draw_view(view: dict) -> None:
    summary = view["summary"]
    n_students, n_cases = len(summary["nicknames"]), len(view["panels"])
    a, b, c, d = st.columns(4)
    a.metric("Students joined", n_students)
    b.metric("Answers", f"{summary['answers']} of {n_students * n_cases}")
    c.metric("Class diagnoses right", share(summary["class_accuracy"]))
    d.metric("Model right on these cases", share(summary["model_accuracy"]))
    st.caption("Joined: " + (", ".join(summary["nicknames"]) if summary["nicknames"] else "nobody yet."))
    if summary["both_wrong"]:
        st.warning("The class and the model were both wrong on: " + ", ".join(summary["both_wrong"])
                   + ". These are the cases to discuss.")
    for number, panel in enumerate(view["panels"], start=1):
        case, stats = panel["case"], panel["stats"]
        with st.container(border=True):
            verdict = "right" if case.model_correct else "**wrong**"
            st.markdown(f"**Case {number}: {case.case_id}** · truth **{spoken_label(case.true_label)}** · the model "
                        f"said {spoken_label(case.model_label)} ({case.model_probability:.0%}), {verdict}")
            left, middle, right = st.columns([2, 2, 3])
            left.image(panel["clicks"], width="stretch",
                       caption=f"Where the class clicked ({len(stats['clicks'])} clicks)")
            middle.image(panel["map"], width="stretch", caption="The model's Grad-CAM map; green: the expert outline")
            with right:
                if not stats["answers"]:
                    st.caption("No answer yet.")
                    continue
                diagnoses = " · ".join(f"{spoken_label(label)} {count}"
                                       for label, count in stats["diagnoses"].items())
                lines = [f"**{stats['answers']}** answers: {diagnoses}",
                         f"agreed with the model: **{share(stats['agree_with_model'])}**",
                         f"diagnosis right: **{share(stats['correct'])}**"]
                if stats["click_hits"] is not None:
                    lines.append(f"clicks on the outline: **{share(stats['click_hits'])}**")
                if stats["map_peak_hit"] is not None:
                    lines.append(f"the model's map peak on the outline: **{'yes' if stats['map_peak_hit'] else 'no'}**")
                st.markdown("\n".join(f"- {line}" for line in lines))
                if stats["both_wrong"]:
                    st.error("Most of the class and the model were wrong here.")
                elif case.model_correct is False and stats["class_wrong"] is False:
                    st.success("The class was right where the model was wrong.")


def current_view(code: str, case_ids: tuple) -> tuple[int, dict] | None:
    """(version, view) of the class: rebuilt only when the class changed since this session last drew it."""
    try:
        version = store.class_version(code)
    except ClassError as err:
        st.warning(str(err))
        return None
    cached = st.session_state.get(Keys.TEACHER_VIEW)
    if not cached or cached["code"] != code or cached["version"] != version:
        with st.spinner("Gathering the class's answers…"):
            cached = {"code": code, "version": version, "view": build_view(code, class_cases(case_ids))}
        st.session_state[Keys.TEACHER_VIEW] = cached
    return version, cached["view"]


@st.fragment(run_every="2s")
def watch(code: str, drawn: int) -> None:
    """Every two seconds: one read of the class's change counter; the page is redrawn only when it moved."""
    try:
        version = store.class_version(code)
    except ClassError:
        version = None
    if version != drawn:
        st.rerun(scope="app")
    st.caption(f"Live: checked at {datetime.now(timezone.utc):%H:%M:%S} UTC; the answers below are redrawn when a "
               "student joins or answers.")


def teacher_view(teacher: dict) -> None:
    code, key = teacher["code"], teacher["key"]
    try:
        room = store.get_class(code)
    except ClassError as err:
        st.session_state.pop(Keys.TEACHER, None)
        st.error(str(err))
        return
    status = room.status()
    left, right = st.columns([2, 3], vertical_alignment="center")
    with left:
        st.markdown(f'<div style="font-size:4.5rem;font-weight:700;letter-spacing:0.25em;line-height:1.1">{room.code}</div>',
                    unsafe_allow_html=True)
        st.caption("The class code: students type it on the Quiz page.")
    with right:
        when = {"open": f"open until {room.expires_at:%Y-%m-%d %H:%M} UTC",
                "ended": f"ended at {room.ended_at:%H:%M} UTC" if room.ended_at else "ended",
                "expired": "expired"}[status]
        st.markdown((f"**{room.title}** · " if room.title else "") + f"{len(room.case_ids)} cases, seed {room.seed}, {when}.")
        with st.expander("Teacher key (to get these controls back after a reload)"):
            st.code(key, language=None)
            st.caption("Keep it private: whoever has it can end or delete this class.")
    missing = [i for i in room.case_ids if i not in by_id]
    if missing:
        st.warning(f"{len(missing)} case(s) of this class are not in this server's case list ({', '.join(missing)}).")
    current = current_view(room.code, tuple(room.case_ids))
    if current is not None:
        version, view = current
        watch(room.code, version)
        draw_view(view)

    st.divider()
    a, b, c = st.columns(3)
    if status == "open":
        a.button("End the class", on_click=end_class, args=(room.code, key),
                 help="Students can no longer join or answer; the answers stay until you delete the class.")
    confirm = b.checkbox("Yes, delete every answer of this class", key=Keys.DELETE_CONFIRM)
    b.button("Delete the class", disabled=not confirm, on_click=delete_class, args=(room.code, key))
    c.button("Leave this view", on_click=forget_class,
             help="The class goes on; resume it here with its code and teacher key.")


def forget_class() -> None:
    for key in (Keys.TEACHER, Keys.TEACHER_VIEW, Keys.DELETE_CONFIRM):
        st.session_state.pop(key, None)


def end_class(code: str, key: str) -> None:
    try:
        store.end_class(code, teacher=key)
        st.session_state[Keys.CLASS_MESSAGE] = ("success", f"Class {code} has ended: students can no longer answer.")
    except ClassError as err:
        st.session_state[Keys.CLASS_MESSAGE] = ("error", str(err))


def delete_class(code: str, key: str) -> None:
    try:
        removed = store.delete_class(code, teacher=key)
    except ClassError as err:
        st.session_state[Keys.CLASS_MESSAGE] = ("error", str(err))
        return
    forget_class()
    st.session_state[Keys.CLASS_MESSAGE] = ("success", f"Class {code} and its {removed} answers are deleted.")


message = st.session_state.pop(Keys.CLASS_MESSAGE, None)
if message:
    (st.success if message[0] == "success" else st.error)(message[1])
teacher = st.session_state.get(Keys.TEACHER)
if teacher is None:
    open_or_resume()
else:
    teacher_view(teacher)
