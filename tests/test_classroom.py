"""A class in the room, against a real SQLite file: students answering at once (threads and
separate processes), the teacher's live summary, a server restart, bad codes and nicknames,
expiry, deletion, and a schema that can only hold nicknames, clicks and answers."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from conftest import REPO
from core.classroom import CODE_ALPHABET, CODE_LENGTH, ClassError, ClassroomStore
from core.quiz import Case

CASES = [
    Case("chest-01", "/samples/chest_xray/NORMAL/IM-0115-0001.jpeg", "NORMAL", "NORMAL", 0.9, difficulty="easy"),
    Case("chest-02", "/samples/chest_xray/PNEUMONIA/person1_virus_6.jpeg", "PNEUMONIA", "NORMAL", 0.6,
         difficulty="hard"),
    Case("brain-01", "/samples/brain_mri_masks/images/glioma/209.jpg", "glioma", "glioma", 0.8,
         difficulty="medium", has_outline=True),
]
IDS = [c.case_id for c in CASES]


def one_sentence(err: Exception) -> str:
    text = str(err)
    assert text and "\n" not in text and text.endswith(".") and len(text) < 220, text
    return text


def sentence_of(call, *args, **kwargs) -> str:
    with pytest.raises(ClassError) as err:
        call(*args, **kwargs)
    return one_sentence(err.value)


@pytest.fixture
def db_file(tmp_path):
    return tmp_path / "classes.sqlite"


@pytest.fixture
def store(db_file):
    store = ClassroomStore(f"sqlite:///{db_file}")
    yield store
    store.close()


def rows_of(db_file, table: str) -> list[tuple]:
    with sqlite3.connect(db_file) as raw:
        return raw.execute(f"SELECT * FROM {table}").fetchall()


# --------------------------------------------------------------------------------- where and what

def test_default_location_is_a_private_folder_and_file_in_wal_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDXAI_CLASS_DB", raising=False)
    monkeypatch.setenv("MEDXAI_CLASS_DIR", str(tmp_path / "teaching" / "classes"))
    store = ClassroomStore()
    folder = tmp_path / "teaching" / "classes"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "classes.sqlite").stat().st_mode) == 0o600
    assert store.location.endswith("classes.sqlite")
    store.open_class(IDS)
    store.close()
    with sqlite3.connect(folder / "classes.sqlite") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # without MEDXAI_CLASS_DIR: the per-user data folder
    monkeypatch.delenv("MEDXAI_CLASS_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    ClassroomStore().close()
    assert (tmp_path / "xdg" / "medxai-dashboard" / "classes.sqlite").is_file()
    # MEDXAI_CLASS_DB: any SQLAlchemy URL (here another SQLite file) wins over the folder
    monkeypatch.setenv("MEDXAI_CLASS_DB", f"sqlite:///{tmp_path / 'shared.sqlite'}")
    ClassroomStore().close()
    assert (tmp_path / "shared.sqlite").is_file()


def test_bad_database_addresses_give_one_sentence(tmp_path):
    assert "SQLAlchemy URL" in sentence_of(ClassroomStore, "not a url at all")
    assert "in-memory" in sentence_of(ClassroomStore, "sqlite://")
    assert "does not exist" in sentence_of(ClassroomStore, f"sqlite:///{tmp_path / 'missing' / 'c.sqlite'}")


EXPECTED_SCHEMA = {
    "classes": ["code", "title", "seed", "opened_at", "expires_at", "ended_at", "version", "teacher_sha256"],
    "class_cases": ["code", "case_id", "position"],
    "students": ["id", "code", "nickname", "nickname_key", "token_sha256"],
    "answers": ["student_id", "case_id", "code", "diagnosis", "click_row", "click_col", "click_hit",
                "map_peak_hit", "correct"],
}


def test_schema_holds_only_nicknames_clicks_answers_and_class_metadata(store, db_file):
    inspector = sa.inspect(sa.create_engine(f"sqlite:///{db_file}"))
    assert sorted(inspector.get_table_names()) == sorted(EXPECTED_SCHEMA)
    for table, columns in EXPECTED_SCHEMA.items():
        assert [c["name"] for c in inspector.get_columns(table)] == columns, table
    # nothing that could hold an image or a scan: no binary columns, no free text beyond labels
    for table in EXPECTED_SCHEMA:
        for column in inspector.get_columns(table):
            assert not isinstance(column["type"], (sa.LargeBinary, sa.Text)), (table, column["name"])
            assert column["type"].python_type is not bytes


def test_a_full_class_stores_no_image_reference_and_no_token_in_clear(store, db_file):
    room = store.open_class(IDS, title="Tuesday radiology", seed=11)
    token = store.join(room.code, "Ada")
    store.submit(room.code, token, "brain-01", "glioma", click=(220, 230), click_hit=True, correct=True)
    dump = repr([rows_of(db_file, t) for t in EXPECTED_SCHEMA])
    for case in CASES:
        assert case.image_ref not in dump and ".jp" not in dump
    assert token not in dump
    assert "Ada" in dump and "brain-01" in dump


# --------------------------------------------------------------------------------- the teacher

def test_open_class_gives_a_short_unambiguous_code(store):
    codes = {store.open_class(IDS).code for _ in range(20)}
    assert len(codes) == 20
    for code in codes:
        assert len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET)
        assert not set(code) & set("IL01O")
    room = store.get_class(next(iter(codes)))
    assert room.case_ids == tuple(IDS) and room.status() == "open"
    # a code typed in lower case with a dash or spaces is the same code
    code = next(iter(codes))
    assert store.get_class(f" {code[:3].lower()}-{code[3:]} ").code == code


def test_bad_class_requests_give_one_sentence(store):
    assert "1 to" in sentence_of(store.open_class, [])
    assert "twice" in sentence_of(store.open_class, ["c1", "c1"])
    assert "case id" in sentence_of(store.open_class, ["chest/NORMAL/IM-0001.jpeg"])
    assert "days" in sentence_of(store.open_class, IDS, expires_days=-1)
    assert "seed" in sentence_of(store.open_class, IDS, seed="abc")


def test_class_days_come_from_the_environment(store, monkeypatch):
    monkeypatch.setenv("MEDXAI_CLASS_DAYS", "0.5")
    room = store.open_class(IDS)
    assert room.expires_at - room.opened_at == timedelta(hours=12)
    monkeypatch.setenv("MEDXAI_CLASS_DAYS", "soon")
    assert "MEDXAI_CLASS_DAYS" in sentence_of(store.open_class, IDS)
    monkeypatch.delenv("MEDXAI_CLASS_DAYS")
    room = store.open_class(IDS)
    assert room.expires_at - room.opened_at == timedelta(days=7)


def test_class_settings_come_from_the_settings_file(tmp_path, monkeypatch):
    settings = tmp_path / "settings.toml"
    settings.write_text(f'class_dir = "{tmp_path / "from-file"}"\nclass_days = 2\n')
    for name in ("MEDXAI_CLASS_DB", "MEDXAI_CLASS_DIR", "MEDXAI_CLASS_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDXAI_SETTINGS", str(settings))
    store = ClassroomStore()
    room = store.open_class(IDS)
    assert room.expires_at - room.opened_at == timedelta(days=2)
    assert (tmp_path / "from-file" / "classes.sqlite").is_file()
    store.close()
    settings.write_text("class_days = [\n")  # not TOML
    assert "not valid TOML" in sentence_of(ClassroomStore)


def test_only_the_teacher_key_ends_or_deletes_a_class(store, db_file):
    from core.classroom import new_teacher_key

    key = new_teacher_key()
    room = store.open_class(IDS, teacher=key)
    assert store.is_teacher(room.code, key) and not store.is_teacher(room.code, None)
    assert not store.is_teacher(room.code, new_teacher_key())
    assert "Only the teacher" in sentence_of(store.end_class, room.code)
    assert "Only the teacher" in sentence_of(store.delete_class, room.code, teacher="not-the-key")
    assert store.get_class(room.code).status() == "open"
    assert key not in repr(rows_of(db_file, "classes"))  # only its SHA-256 is stored
    assert store.end_class(room.code, teacher=key).status() == "ended"
    assert store.delete_class(room.code, teacher=key) == 0
    assert "teacher key" in sentence_of(store.open_class, IDS, teacher="short")


def test_a_database_made_before_the_teacher_key_is_upgraded(db_file):
    with sqlite3.connect(db_file) as raw:  # the first schema of the classes table
        raw.execute("CREATE TABLE classes (code VARCHAR(6) PRIMARY KEY, title VARCHAR(80), seed BIGINT, "
                    "opened_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, ended_at BIGINT, version INTEGER NOT NULL)")
        raw.execute("INSERT INTO classes VALUES ('ABCDEF', NULL, NULL, 0, 99999999999, NULL, 0)")
    store = ClassroomStore(f"sqlite:///{db_file}")
    assert store.is_teacher("ABCDEF", None)  # an old class has no key: anyone on its server may end it
    assert store.open_class(IDS, teacher="k" * 22).code
    store.close()


# --------------------------------------------------------------------------------- students

def test_students_answer_and_the_teacher_summary_reflects_every_answer(store):
    room = store.open_class(IDS, seed=3)
    version = store.class_version(room.code)
    # chest-02: the model says NORMAL, the truth is PNEUMONIA
    plan = {"Ada": ("NORMAL", False, (100, 120)), "Ben": ("NORMAL", False, (104, 118)),
            "Cy": ("PNEUMONIA", True, None)}
    for nickname, (diagnosis, correct, click) in plan.items():
        token = store.join(room.code, nickname)
        assert store.submit(room.code, token, "chest-02", diagnosis, click=click, correct=correct)
        assert store.submit(room.code, token, "brain-01", "glioma", click=(230, 220),
                            click_hit=nickname != "Cy", map_peak_hit=True, correct=True)
        assert store.answered_cases(room.code, token) == {"chest-02", "brain-01"}
    assert store.class_version(room.code) == version + 3 + 6
    assert store.nicknames(room.code) == ["Ada", "Ben", "Cy"]

    chest = store.case_summary(room.code, "chest-02", "NORMAL")  # truth inferred from the correct flags
    assert chest["answers"] == 3 and chest["clicks"] == [(100, 120), (104, 118)]
    assert chest["agree_with_model"] == pytest.approx(2 / 3) and chest["correct"] == pytest.approx(1 / 3)
    assert chest["majority_diagnosis"] == "NORMAL"
    assert chest["class_wrong"] and chest["model_wrong"] and chest["both_wrong"]
    brain = store.case_summary(room.code, "brain-01", "glioma", true_label="glioma")
    assert brain["both_wrong"] is False and brain["click_hits"] == pytest.approx(2 / 3)
    assert brain["map_peak_hit"] is True
    unanswered = store.case_summary(room.code, "chest-01", "NORMAL")
    assert unanswered["answers"] == 0 and unanswered["agree_with_model"] is None
    assert unanswered["both_wrong"] is None

    summary = store.class_summary(room.code, CASES)
    assert summary["answers"] == 6 and summary["nicknames"] == ["Ada", "Ben", "Cy"]
    assert summary["both_wrong"] == ["chest-02"] and summary["status"] == "open"
    assert [c["case_id"] for c in summary["cases"]] == IDS
    assert summary["class_accuracy"] == pytest.approx(4 / 6)
    assert summary["model_accuracy"] == pytest.approx(2 / 3)
    assert summary["version"] == store.class_version(room.code)
    answers = store.class_answers(room.code)
    assert [a["case_id"] for a in answers] == ["chest-02"] * 3 + ["brain-01"] * 3  # class order
    assert answers[0] == {"nickname": "Ada", "case_id": "chest-02", "diagnosis": "NORMAL",
                          "click": (100, 120), "click_hit": None, "map_peak_hit": None, "correct": False}


def test_answers_are_final_a_rerun_is_harmless_a_change_is_refused(store):
    room = store.open_class(IDS)
    token = store.join(room.code, "Ada")
    assert store.submit(room.code, token, "chest-01", "NORMAL", click=(10, 20), correct=True) is True
    assert store.submit(room.code, token, "chest-01", "NORMAL", click=(10.2, 19.8), correct=True) is False
    assert "already answered" in sentence_of(store.submit, room.code, token, "chest-01", "PNEUMONIA")
    assert [a["diagnosis"] for a in store.class_answers(room.code)] == ["NORMAL"]


def test_bad_codes_nicknames_and_answers_give_one_sentence(store):
    room = store.open_class(IDS)
    token = store.join(room.code, "Ada")
    unknown = "".join(c for c in "ZZZZZZ")
    assert "No class has the code ZZZZZZ" in sentence_of(store.join, unknown, "Ben")
    for malformed in ("abc", "K7QM3P9", "K7QM0P", "", None):
        assert "not a class code" in sentence_of(store.join, malformed, "Ben")
    assert "already taken" in sentence_of(store.join, room.code, "Ada")
    assert "already taken" in sentence_of(store.join, room.code, "  aDA ")  # case and spaces do not count
    assert "Type a nickname" in sentence_of(store.join, room.code, "   ")
    assert "24 or fewer" in sentence_of(store.join, room.code, "x" * 25)
    for odd in ("=HYPERLINK(1)", "-Ada", "Ada\x00", "Ada😀", "<b>Ada</b>"):
        assert "letters, digits" in sentence_of(store.join, room.code, odd)
    assert store.join(room.code, "Zoë O'Neil-2") and store.join(room.code, "李雷")
    assert "not part of class" in sentence_of(store.submit, room.code, token, "chest-99", "NORMAL")
    assert "not registered" in sentence_of(store.submit, room.code, "forged-token", "chest-01", "NORMAL")
    assert "diagnosis" in sentence_of(store.submit, room.code, token, "chest-01", "")
    assert "click" in sentence_of(store.submit, room.code, token, "chest-01", "NORMAL", click=(-1, 4))
    other = store.open_class(IDS)
    assert "not registered" in sentence_of(store.submit, other.code, token, "chest-01", "NORMAL")


def test_ended_and_expired_classes_refuse_students(store):
    ended = store.open_class(IDS)
    token = store.join(ended.code, "Ada")
    assert store.end_class(ended.code).status() == "ended"
    assert "has ended" in sentence_of(store.join, ended.code, "Ben")
    assert "has ended" in sentence_of(store.submit, ended.code, token, "chest-01", "NORMAL")
    assert store.class_summary(ended.code, CASES)["status"] == "ended"  # the teacher still sees it

    expired = store.open_class(IDS, expires_days=0)
    assert store.get_class(expired.code).status() == "expired"
    assert "expired on" in sentence_of(store.join, expired.code, "Ben")
    week_ago = datetime.now(timezone.utc) - timedelta(days=8)
    old = store.open_class(IDS, expires_days=7, now=week_ago)
    assert "expired on" in sentence_of(store.join, old.code, "Ben")


def test_delete_removes_the_class_and_every_answer(store, db_file):
    room = store.open_class(IDS)
    keep = store.open_class(IDS)
    for i, code in enumerate((room.code, room.code, keep.code)):
        store.submit(code, store.join(code, f"s{i}"), "chest-01", "NORMAL", click=(i, i))
    assert store.delete_class(room.code) == 2
    assert "No class has the code" in sentence_of(store.get_class, room.code)
    assert "No class has the code" in sentence_of(store.delete_class, room.code)
    for table in EXPECTED_SCHEMA:
        assert room.code not in repr(rows_of(db_file, table)), table
    assert len(rows_of(db_file, "answers")) == 1 and store.class_summary(keep.code, CASES)["answers"] == 1


def test_purge_expired_removes_only_expired_classes(store, db_file):
    short = store.open_class(IDS, expires_days=1)
    long = store.open_class(IDS, expires_days=30)
    store.submit(short.code, store.join(short.code, "Ada"), "chest-01", "NORMAL")
    assert store.purge_expired() == 0
    assert store.purge_expired(now=datetime.now(timezone.utc) + timedelta(days=2)) == 1
    assert "No class has the code" in sentence_of(store.get_class, short.code)
    assert store.get_class(long.code).status() == "open"
    assert rows_of(db_file, "answers") == [] and rows_of(db_file, "students") == []
    # opening a class purges expired ones on the way
    store.open_class(IDS, expires_days=0)
    store.open_class(IDS)
    assert len(rows_of(db_file, "classes")) == 2


def test_a_class_survives_a_server_restart(db_file):
    first = ClassroomStore(f"sqlite:///{db_file}")
    room = first.open_class(IDS, title="Ward round", seed=5)
    token = first.join(room.code, "Ada")
    first.submit(room.code, token, "chest-01", "NORMAL", click=(3, 4), correct=True)
    first.close()
    second = ClassroomStore(f"sqlite:///{db_file}")  # a new server process on the same file
    again = second.get_class(room.code)
    assert (again.title, again.seed, again.case_ids, again.status()) == ("Ward round", 5, tuple(IDS), "open")
    assert second.class_answers(room.code)[0]["click"] == (3, 4)
    assert second.submit(room.code, token, "chest-02", "PNEUMONIA")  # the student's token still works
    assert "already taken" in sentence_of(second.join, room.code, "Ada")
    second.close()


# --------------------------------------------------------------------------------- at once

def answer_all(store, code, nickname, barrier=None):
    token = store.join(code, nickname)
    if barrier is not None:
        barrier.wait()
    for case in CASES:
        store.submit(code, token, case.case_id, case.true_label if len(nickname) % 2 else "NORMAL",
                     click=(len(nickname), 7), correct=len(nickname) % 2 == 1)


def test_many_students_answering_at_once_from_threads(store):
    room = store.open_class(IDS)
    n_students = 16
    barrier = threading.Barrier(n_students)
    errors = []

    def student(i):
        try:
            answer_all(store, room.code, f"student{i:02d}" + "x" * (i % 2), barrier)
        except Exception as err:  # collected: an exception in a thread would otherwise be lost
            errors.append(err)

    started = time.perf_counter()
    threads = [threading.Thread(target=student, args=(i,)) for i in range(n_students)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert errors == []
    summary = store.class_summary(room.code, CASES)
    assert summary["answers"] == n_students * len(CASES) and len(summary["nicknames"]) == n_students
    assert all(c["answers"] == n_students for c in summary["cases"])
    assert summary["version"] == n_students * (1 + len(CASES))
    print(f"{n_students} threads: {n_students * (1 + len(CASES))} writes in {elapsed:.2f} s")


WORKER = """
import sys, time
from pathlib import Path
from core.classroom import ClassroomStore
url, code, first, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
store = ClassroomStore(url)
tokens = [store.join(code, f"proc{first + i:03d}") for i in range(count)]
Path(str(go) + f".ready{first}").touch()
while not go.exists():  # start writing together with the other processes
    time.sleep(0.005)
for case_id in sys.argv[6:]:
    for token in tokens:
        store.submit(code, token, case_id, "NORMAL", click=(first, 1), correct=False)
print("done")
"""


@pytest.mark.slow
def test_separate_processes_write_to_the_same_file(store, db_file, tmp_path):
    room = store.open_class(IDS)
    go = tmp_path / "go"
    n_procs, per_proc = 4, 5
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, f"sqlite:///{db_file}", room.code,
                               str(i * per_proc), str(per_proc), str(go), *IDS],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(n_procs)]
    ready = [tmp_path / f"go.ready{i * per_proc}" for i in range(n_procs)]
    while not all(r.exists() for r in ready) and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "done", err[-2000:]
    # the teacher's store, open all along in this process, sees every answer
    summary = store.class_summary(room.code, CASES)
    assert summary["answers"] == n_procs * per_proc * len(IDS)
    assert len(summary["nicknames"]) == n_procs * per_proc
    assert summary["cases"][0]["clicks"].count((0, 1)) == per_proc
