"""A class in the room through the pages, against a real SQLite file: the teacher opens a class on the
Classroom page, students join on the Quiz page from separate AppTest sessions and answer at once, and
the teacher's view shows them; the class survives a server restart (a new store on the same file);
bad codes, duplicate nicknames, expired and ended classes give one sentence; only the teacher's
session ends or deletes the class; nothing but nicknames, clicks and answers reaches the disk."""

from __future__ import annotations

import ast
import builtins
import contextlib
import sqlite3
import threading

import pytest

from page_support import is_one_sentence
from teaching_support import (
    button,
    case_scan,
    check_clean,
    displayed_click,
    metrics,
    samples,
    texts,
)
from ui.state import Keys

pytestmark = pytest.mark.slow


def open_class(new_session, cases: int = 3, seed: int = 7):
    teacher = new_session("classroom")
    check_clean(teacher)
    assert teacher.title[0].value == "Classroom" and "Not a diagnostic device" in teacher.caption[0].value
    teacher.number_input(key=Keys.TEACHER_COUNT).set_value(cases)
    teacher.number_input(key=Keys.TEACHER_SEED).set_value(seed)
    button(teacher, "Open the class").click().run()
    check_clean(teacher)
    return teacher, teacher.session_state[Keys.TEACHER]["code"], teacher.session_state[Keys.TEACHER]["key"]


def join(new_session, code: str, nickname: str):
    student = new_session("quiz")
    student.segmented_control(key=Keys.QUIZ_MODE).set_value("In a class").run()
    student.text_input(key=Keys.CLASS_CODE_WIDGET).input(code)
    student.text_input(key=Keys.NICKNAME_WIDGET).input(nickname)
    button(student, "Join the class").click().run()
    return student


def case_in_view(student) -> str:
    """The id of the case the student is asked about (from its diagnosis widget's key)."""
    keys = [r.key for r in student.radio if r.key and r.key.startswith(Keys.QUIZ_DIAGNOSIS)]
    assert len(keys) == 1, keys
    return keys[0].rsplit("_", 1)[1]


def prepare_answer(student, click_row_col=None, pick: int = 0):
    """Click and pick a diagnosis for the case in view (not yet submitted); returns (case id, diagnosis)."""
    from core.teaching import read_quiz

    case_id = case_in_view(student)
    sample = next(c["sample"] for c in read_quiz()["cases"] if c["id"] == case_id)
    context = f"class-{student.session_state[Keys.CLASS_JOINED]['code']}"
    if click_row_col is not None:
        student.session_state[f"{Keys.QUIZ_CLICK}_{context}_{case_id}"] = displayed_click(
            *click_row_col, case_scan(sample).shape)
        student.run()
    radio = student.radio(key=f"{Keys.QUIZ_DIAGNOSIS}_{context}_{case_id}")
    diagnosis = radio.options[pick]
    radio.set_value(diagnosis).run()
    return case_id, radio.value


@contextlib.contextmanager
def serial_ast_parse():
    """``ast.parse`` and ``compile`` one thread at a time while the students' runs overlap.

    Each AppTest compiles the page scripts in its own thread, and CPython 3.11's AST constructor keeps its
    recursion depth in state shared between threads: parses that overlap can fail with "SystemError: AST
    constructor recursion depth mismatch" (CPython issue gh-106905, fixed in 3.12 and later, not in 3.11). A
    server's sessions share one script cache and compile each page once; here every AppTest compiles anew.
    """
    originals = ast.parse, builtins.compile  # Streamlit parses a page, then compiles the tree (which validates it)
    lock = threading.RLock()

    def one_at_a_time(function):
        def call(*args, **kwargs):
            with lock:
                return function(*args, **kwargs)
        return call

    ast.parse, builtins.compile = (one_at_a_time(f) for f in originals)
    try:
        yield
    finally:
        ast.parse, builtins.compile = originals


def rows_of(db, table: str) -> list[tuple]:
    with sqlite3.connect(db) as raw:
        return raw.execute(f"SELECT * FROM {table}").fetchall()


@contextlib.contextmanager
def steady_runtime():
    """Streamlit's runtime singleton stays in place while the students' runs overlap.

    Each AppTest run installs a stand-in runtime (``Runtime._instance``) and sets it back to None when its run
    ends, so a run ending in one thread takes the runtime from under a run still going in another ("Runtime
    hasn't been created!", or a run that takes itself for a bare script). A server has one runtime for all its
    sessions; here the last one installed answers for any run that finds none.
    """
    from streamlit.runtime import Runtime

    originals = Runtime.__dict__["instance"], Runtime.__dict__["exists"]
    last = []

    def instance(cls):
        if cls._instance is not None:
            last[:] = [cls._instance]
            return cls._instance
        if last:
            return last[0]
        raise RuntimeError("Runtime hasn't been created!")

    Runtime.instance = classmethod(instance)
    Runtime.exists = classmethod(lambda cls: cls._instance is not None or bool(last))
    try:
        yield
    finally:
        Runtime.instance, Runtime.exists = originals


def test_students_answer_at_once_and_the_teacher_sees_them(teaching_env, class_dir):
    import test_privacy

    teacher, code, _ = open_class(teaching_env)
    assert code in texts(teacher) or code in "".join(m.value for m in teacher.markdown)
    assert metrics(teacher)["Students joined"] == "0"
    names = ("Ada", "Ben", "Cy")
    students = [join(teaching_env, code, name) for name in names]
    for student, name in zip(students, names):
        check_clean(student)
        assert f"You are **{name}** in class **{code}**" in texts(student)
    plans = [prepare_answer(s, (100 + 10 * i, 120 + 10 * i), pick=i % 2) for i, s in enumerate(students)]
    assert len({case_id for case_id, _ in plans}) == 1  # the class's first case, for everyone

    writes: list[str] = []
    test_privacy._WRITES = writes
    barrier = threading.Barrier(len(students))
    failures = []

    def submit(student):
        try:
            barrier.wait()
            button(student, "Submit my read").click().run()
        except Exception as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=submit, args=(s,)) for s in students]
    with serial_ast_parse(), steady_runtime():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    test_privacy._WRITES = None
    assert failures == []
    for student in students:
        check_clean(student)
        assert "the reveal" in texts(student)
    written = {p.name for p in test_privacy.written_files(writes) if not test_privacy.generated_code(p)}
    assert written <= {"classes.sqlite", "classes.sqlite-wal", "classes.sqlite-shm"}, written

    teacher.run()
    check_clean(teacher)
    assert metrics(teacher)["Students joined"] == "3"
    assert metrics(teacher)["Answers"] == "3 of 9"
    assert "Joined: Ada, Ben, Cy" in texts(teacher)
    assert any(m.value.startswith("- **3** answers") for m in teacher.markdown)
    db = class_dir / "classes.sqlite"
    stored = rows_of(db, "answers")
    assert len(stored) == 3
    assert sorted((row[4], row[5]) for row in stored) == [(100, 120), (110, 130), (120, 140)]
    dump = repr([rows_of(db, t) for t in ("classes", "class_cases", "students", "answers")])
    for key, (path, *_rest) in samples().items():
        assert path.name not in dump and key not in dump
    for student in students:
        assert student.session_state[Keys.CLASS_JOINED]["token"] not in dump


def test_a_class_survives_a_server_restart(teaching_env, class_dir):
    from ui.teaching import _store

    teacher, code, key = open_class(teaching_env, cases=2)
    student = join(teaching_env, code, "Ada")
    case_id, diagnosis = prepare_answer(student, (50, 60))
    button(student, "Submit my read").click().run()
    check_clean(student)
    _store.clear()  # the server restarts: a new store on the same database file
    again = teaching_env("classroom")
    again.text_input(key=Keys.RESUME_CODE).input(code.lower())
    again.text_input(key=Keys.RESUME_KEY).input("not the key")
    button(again, "Resume").click().run()
    assert len(again.error) == 1 and is_one_sentence(again.error[0].value) and "teacher key" in again.error[0].value
    again.text_input(key=Keys.RESUME_KEY).input(key)
    button(again, "Resume").click().run()
    check_clean(again)
    assert metrics(again)["Students joined"] == "1" and metrics(again)["Answers"] == "1 of 2"
    # the student's session still holds its token: the next answer goes to the same class
    button(student, "Next case ▶").click().run()
    prepare_answer(student, (10, 10))
    button(student, "Submit my read").click().run()
    check_clean(student)
    again.run()
    assert metrics(again)["Answers"] == "2 of 2"


def test_bad_code_duplicate_nickname_expired_and_ended_classes_give_one_sentence(teaching_env, class_dir):
    from core.classroom import ClassroomStore

    teacher, code, _ = open_class(teaching_env, cases=2)
    messages = {}
    bad = join(teaching_env, "K7Q", "Ada")
    messages["bad code"] = [e.value for e in bad.error]
    join(teaching_env, code, "Ada")
    duplicate = join(teaching_env, code, " ada ")
    messages["duplicate nickname"] = [e.value for e in duplicate.error]
    store = ClassroomStore(f"sqlite:///{class_dir / 'classes.sqlite'}")
    expired = store.open_class(["chest-01"], expires_days=0)
    store.close()
    late = join(teaching_env, expired.code, "Ben")
    messages["expired class"] = [e.value for e in late.error]
    for what, errors in messages.items():
        assert len(errors) == 1 and is_one_sentence(errors[0]), (what, errors)
        assert not [e for e in (bad, duplicate, late) if e.exception], what
    assert "not a class code" in messages["bad code"][0]
    assert "already taken" in messages["duplicate nickname"][0]
    assert "expired on" in messages["expired class"][0]

    student = join(teaching_env, code, "Cy")
    prepare_answer(student, (30, 30))
    button(teacher, "End the class").click().run()
    check_clean(teacher)
    assert "has ended" in " ".join(s.value for s in teacher.success)
    button(student, "Submit my read").click().run()
    assert len(student.error) == 1 and is_one_sentence(student.error[0].value)
    assert "has ended" in student.error[0].value


def test_only_the_teachers_session_deletes_the_class(teaching_env, class_dir):
    teacher, code, key = open_class(teaching_env, cases=2)
    student = join(teaching_env, code, "Ada")
    prepare_answer(student, (5, 5))
    button(student, "Submit my read").click().run()
    other = teaching_env("classroom")  # another browser: no key, so no end or delete is offered
    assert [b.label for b in other.button] == ["Open the class", "Resume"]
    delete = button(teacher, "Delete the class")
    assert delete.disabled  # until the teacher confirms
    teacher.checkbox(key=Keys.DELETE_CONFIRM).check().run()
    button(teacher, "Delete the class").click().run()
    check_clean(teacher)
    assert f"Class {code} and its 1 answers are deleted." in [s.value for s in teacher.success]
    db = class_dir / "classes.sqlite"
    assert rows_of(db, "answers") == [] and rows_of(db, "students") == [] and rows_of(db, "classes") == []
    assert "Open the class" in [b.label for b in teacher.button]
