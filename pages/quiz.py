"""Quiz: reader versus model. The student clicks where they would look and commits a diagnosis; then the
model's answer, its map, the expert outline and the truth are revealed, and both reads are scored.

Alone, the results live in this session only (downloadable as CSV); in a class they go to the class
database (nicknames, clicks and answers only), where the teacher's Classroom page shows them live.
"""

import streamlit as st

from core.classroom import ClassError
from core.quiz import QuizError, answers_csv, choose_cases, score_answer, session_score
from core.teaching import map_peak, spoken_label
from ui.figures import probability_chart
from ui.layout import disclaimer
from ui.models import model_folders, shared_model
from ui.runtime import through_app
from ui.state import Keys
from ui.teaching import (
    CLICK_COLOUR,
    PEAK_COLOUR,
    case_display,
    case_map,
    case_mask,
    case_scan,
    class_store,
    click_on,
    model_answers,
    model_for,
    picture,
    quiz_pool_cases,
    quiz_spec,
    teaching_samples,
)

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

ALONE, IN_CLASS = "On my own", "In a class"

st.title("Quiz: reader versus model")
disclaimer()
st.markdown("Read each case yourself first: **click where you would look** and **pick a diagnosis**, then submit. "
            "Only then do you see what the model said, where its map points, the radiologists' outline and the truth.")
spec = quiz_spec()
if spec is None:
    st.stop()
pool = quiz_pool_cases()
if not pool:
    st.error("No quiz case can be shown: the models for the curated cases are not installed.")
    st.stop()
by_id = {case.case_id: case for case in pool}
METHOD = spec.get("method", "gradcam")
TOLERANCE = float(spec.get("tolerance_mm", 7.0))
titles = {entry.task: entry.title for entry in model_folders() if entry.problem is None}

mode = st.segmented_control("How are you taking part?", [ALONE, IN_CLASS], default=ALONE, required=True,
                            key=Keys.QUIZ_MODE)


def answers_of(context: str) -> dict:
    return st.session_state.setdefault(Keys.QUIZ_ANSWERS, {}).setdefault(context, {})


def move(context: str, index: int) -> None:
    st.session_state.setdefault(Keys.QUIZ_INDEX, {})[context] = index


# ----------------------------------------------------------------------------- setting up

def alone_setup() -> tuple[str, list[str]] | None:
    """The quiz in progress on one's own: (context, case ids), or None after drawing its setup."""
    current = st.session_state.get(Keys.QUIZ_SET)
    if current:
        return current["context"], current["ids"]
    defaults = spec.get("defaults", {})
    st.markdown("Choose how many cases and a seed. The same seed always gives the same cases in the same order, "
                "so a teacher can give a whole class one seed for homework.")
    left, right = st.columns(2)
    count = left.slider("Number of cases", 3, len(pool), min(int(defaults.get("cases", 8)), len(pool)),
                        key=Keys.QUIZ_COUNT)
    seed = right.number_input("Seed", 0, 10 ** 9, int(defaults.get("seed", 2026)), step=1, key=Keys.QUIZ_SEED)
    st.caption("The set mixes easy, medium and hard cases and always includes cases the model in use gets wrong "
               "(about one in four); the first case is one it gets right.")
    if st.button("Start the quiz", type="primary"):
        try:
            chosen = choose_cases(pool, n=int(count), seed=int(seed))
        except QuizError as err:
            st.error(str(err))
            return None
        run = int(st.session_state.get(Keys.QUIZ_RUN, 0)) + 1
        st.session_state[Keys.QUIZ_RUN] = run
        st.session_state[Keys.QUIZ_SET] = {"context": f"alone-{run}", "ids": [c.case_id for c in chosen],
                                           "seed": int(seed)}
        st.rerun()
    return None


def class_setup(store) -> tuple[str, list[str]] | None:
    """The class this student joined: (context, case ids), or None after drawing the join form."""
    joined = st.session_state.get(Keys.CLASS_JOINED)
    if joined:
        try:
            room = store.get_class(joined["code"])
        except ClassError as err:
            st.session_state.pop(Keys.CLASS_JOINED, None)
            st.error(str(err))
            return None
        left, right = st.columns([4, 1], vertical_alignment="center")
        left.markdown(f"You are **{joined['nickname']}** in class **{room.code}**"
                      + (f" ({room.title})" if room.title else "") + ". Keep this tab open until the end of the class.")
        if right.button("Leave the class"):
            st.session_state.pop(Keys.CLASS_JOINED, None)
            st.rerun()
        if room.status() != "open":
            st.info(f"Class {room.code} has {room.status()}; your answers stay with the teacher until the class is deleted.")
        return f"class-{room.code}", list(room.case_ids)
    st.markdown("Type the code on the teacher's screen and a nickname. The class keeps only your nickname, your "
                "clicks and your answers; nothing else about you is stored.")
    left, right = st.columns(2)
    code = left.text_input("Class code", max_chars=12, placeholder="K7QM3P", key=Keys.CLASS_CODE_WIDGET)
    nickname = right.text_input("Nickname", max_chars=24, key=Keys.NICKNAME_WIDGET,
                                help="Any name you like: it need not be your real one.")
    if st.button("Join the class", type="primary"):
        try:
            token = store.join(code, nickname)
            room = store.get_class(code)
        except ClassError as err:
            st.error(str(err))
            return None
        st.session_state[Keys.CLASS_JOINED] = {"code": room.code, "token": token, "nickname": " ".join(nickname.split())}
        st.rerun()
    return None


# ----------------------------------------------------------------------------- one case

def running_score(answers: dict, total: int) -> None:
    score = session_score(list(answers.values()))
    a, b, c, d = st.columns(4)
    a.metric("Cases answered", f"{score['cases']} of {total}")
    b.metric("Your diagnoses right", f"{score['student_correct']} of {score['cases']}" if score["cases"] else "—")
    c.metric("Model's diagnoses right", f"{score['model_correct']} of {score['cases']}" if score["cases"] else "—")
    d.metric("Your clicks on the outline", f"{score['click_hits']} of {score['outlined_cases']}"
             if score["outlined_cases"] else "—")


def ask(case, context: str, number: int, total: int, class_info) -> None:
    sample = teaching_samples()[case.image_ref]
    scan = case_scan(sample)
    display = case_display(scan)
    names = list(model_answers()[case.image_ref].probabilities)
    left, right = st.columns([3, 2])
    with left:
        st.markdown(f"**Case {number} of {total}** · {titles.get(sample.model, 'model')}")
        point = click_on(picture(display, side=720), scan.shape, key=f"{Keys.QUIZ_CLICK}_{context}_{case.case_id}")
        st.caption("Click once where you would look; click again to move your mark. The click is optional, but only a "
                   "click can score on the outline.")
    with right:
        st.markdown("**Your read**")
        diagnosis = st.radio("Your diagnosis", names, index=None, format_func=spoken_label,
                             key=f"{Keys.QUIZ_DIAGNOSIS}_{context}_{case.case_id}")
        st.caption(f"Your mark: row {point[0]}, column {point[1]} of the {scan.shape[0]} x {scan.shape[1]} image."
                   if point else "No mark yet.")
        if st.button("Submit my read", type="primary", disabled=diagnosis is None,
                     key=f"{Keys.QUIZ_SUBMIT}_{context}_{case.case_id}"):
            folder = model_for(sample)
            mask = case_mask(sample, scan)
            with st.spinner("Scoring your read and the model's…"):
                result = case_map(folder, sample, METHOD, names.index(case.model_label))
                try:
                    score = score_answer(case, diagnosis, point, mask, spacing=scan.spacing, tolerance_mm=TOLERANCE,
                                         map_peak=map_peak(result.on_scan))
                    if class_info is not None:
                        class_info["store"].submit(class_info["code"], class_info["token"], case.case_id, diagnosis,
                                                   click=point, map_peak_hit=score["map_peak_hit"],
                                                   click_hit=score["click_hit"], correct=score["diagnosis_correct"])
                except (QuizError, ClassError) as err:
                    st.error(str(err))
                    return
            answers_of(context)[case.case_id] = score
            st.rerun()
        st.caption("Answers are final once submitted: commit to your own read before you see the model's.")


def reveal(case, context: str, number: int, total: int) -> None:
    sample = teaching_samples()[case.image_ref]
    scan = case_scan(sample)
    display = case_display(scan)
    mask = case_mask(sample, scan)
    answer = model_answers()[case.image_ref]
    names = list(answer.probabilities)
    score = answers_of(context)[case.case_id]
    folder = model_for(sample)
    result = case_map(folder, sample, METHOD, names.index(case.model_label))
    st.markdown(f"**Case {number} of {total}: the reveal** · the truth is **{spoken_label(case.true_label)}**")
    you, model, words = st.columns([2, 2, 3])
    with you:
        points = ((score["click"], CLICK_COLOUR),) if score["click"] else ()
        outline = " and the radiologists' outline (green)" if mask is not None else ""
        st.image(picture(display, mask=mask, points=points, side=480), width="stretch",
                 caption=("Your mark (white ring)" if points else "You made no mark") + outline)
    with model:
        points = ((score["map_peak"], PEAK_COLOUR),) if score["map_peak"] else ()
        st.image(picture(display, saliency=result.on_scan, mask=mask, points=points, side=480), width="stretch",
                 caption=f"The model's Grad-CAM map for {spoken_label(case.model_label)}, its hottest point "
                         "(pink ring)")
    with words:
        tick = {True: ":green[:material/check_circle: right]", False: ":red[:material/cancel: wrong]", None: "—"}
        hit = {True: ":green[:material/check_circle: on it]", False: ":red[:material/cancel: off it]", None: "not scored"}
        st.markdown(
            "| | You | The model |\n|---|---|---|\n"
            f"| Diagnosis | {spoken_label(score['diagnosis'])} {tick[score['diagnosis_correct']]} | "
            f"{spoken_label(case.model_label)} ({case.model_probability:.0%}) {tick[case.model_correct]} |\n"
            f"| Click / map peak on the outline | {hit[score['click_hit']]} | {hit[score['map_peak_hit']]} |")
        if score["tolerance"]:
            st.caption(score["tolerance"])
        elif mask is None:
            st.caption("This case has no expert outline, so only the diagnosis is scored.")
        if not case.model_correct and score["agrees_with_model"]:
            st.warning("You gave the model's wrong answer. Did you read the image, or expect the model to be right? "
                       "Trusting a tool more than your own read is automation bias.")
        elif not case.model_correct and score["diagnosis_correct"]:
            st.success("You were right where the model was wrong.")
        elif not case.model_correct:
            st.info("You and the model were both wrong on this case.")
        loaded = shared_model(folder)
        st.plotly_chart(probability_chart(names, [answer.probabilities[n] for n in names], names.index(case.model_label),
                                          loaded.threshold if len(names) == 2 else None),
                        key=f"{Keys.QUIZ_PROBABILITIES}_{case.case_id}", config={"displayModeBar": False})
    label = "Next case ▶" if number < total else "See my results ▶"
    st.button(label, type="primary", on_click=move, args=(context, number),
              key=f"{Keys.QUIZ_NEXT}_{context}_{case.case_id}")


def summary(context: str, ids: list[str], alone: bool) -> None:
    answers = answers_of(context)
    done = [answers[i] for i in ids if i in answers]
    score = session_score(done)
    st.subheader("Your results")
    a, b, c, d = st.columns(4)
    a.metric("Your diagnoses right", f"{score['student_correct']} of {score['cases']}")
    b.metric("Model's diagnoses right", f"{score['model_correct']} of {score['cases']}")
    c.metric("You agreed with the model", f"{score['agreed_with_model']} of {score['cases']}")
    d.metric("Your clicks on the outline", f"{score['click_hits']} of {score['outlined_cases']}"
             if score["outlined_cases"] else "—")
    lines = []
    if score["followed_wrong_model"]:
        lines.append(f"On {score['followed_wrong_model']} case(s) you gave the model's wrong answer: automation bias "
                     "is the habit of trusting the tool over your own read.")
    if score["both_wrong_cases"]:
        lines.append("You and the model were both wrong on " + ", ".join(score["both_wrong_cases"]) + ".")
    if score["map_peak_scored"]:
        lines.append(f"The model's map peak landed on the outline in {score['map_peak_hits']} of "
                     f"{score['map_peak_scored']} outlined cases; your clicks in {score['click_hits']}.")
    for line in lines:
        st.markdown(f"- {line}")
    st.dataframe({"Case": [a["case_id"] for a in done],
                  "Your diagnosis": [spoken_label(a["diagnosis"]) for a in done],
                  "Truth": [spoken_label(a["true_label"]) for a in done],
                  "Model": [spoken_label(a["model_label"]) for a in done],
                  "Your click on the outline": ["—" if a["click_hit"] is None else "yes" if a["click_hit"] else "no"
                                                for a in done]},
                 hide_index=True, width="stretch")
    if alone:
        st.download_button("Download my results (CSV)", answers_csv(done), file_name="quiz_results.csv",
                           mime="text/csv", help="Case ids, your answers and the scores; no image, file name or name.")
        if st.button("Start a new quiz"):
            st.session_state.pop(Keys.QUIZ_SET, None)
            st.rerun()
        st.caption("Your results live only in this browser session: closing the tab forgets them.")
    else:
        st.caption("Your answers are with the class; the teacher's screen shows the whole class's answers.")


# ----------------------------------------------------------------------------- the page

class_info = None
if mode == ALONE:
    chosen = alone_setup()
else:
    store = class_store()
    chosen = class_setup(store) if store is not None else None
    joined = st.session_state.get(Keys.CLASS_JOINED)
    if chosen and joined:
        class_info = {"store": store, "code": joined["code"], "token": joined["token"]}
if chosen is None:
    st.stop()
context, ids = chosen
missing = [i for i in ids if i not in by_id]
if missing:
    st.warning(f"{len(missing)} case(s) of this quiz are not in this server's case list ({', '.join(missing)}), so "
               "they are left out.")
ids = [i for i in ids if i in by_id]
answers = answers_of(context)
indices = st.session_state.setdefault(Keys.QUIZ_INDEX, {})
if class_info is not None:  # after a rerun: the first case this student has not answered in the class
    stored = class_info["store"].answered_cases(class_info["code"], class_info["token"])
    unanswered = [i for i in ids if i not in stored and i not in answers]
    indices.setdefault(context, ids.index(unanswered[0]) if unanswered else len(ids))
index = int(indices.get(context, 0))
if index < len(ids):
    running_score({k: v for k, v in answers.items() if k in ids}, len(ids))
st.progress(sum(i in answers for i in ids) / max(1, len(ids)),
            text=f"Case {index + 1} of {len(ids)}" if index < len(ids) else "All cases answered")
if index >= len(ids):
    summary(context, ids, alone=class_info is None)
else:
    case = by_id[ids[index]]
    if case.case_id in answers:
        reveal(case, context, index + 1, len(ids))
    else:
        ask(case, context, index + 1, len(ids), class_info)
