"""A class in the room: the teacher opens a class, students join with its code and a nickname,
and their answers are kept for the teacher's live view until the class is deleted or expires.

What is stored, and nothing else (``tests/test_classroom.py`` lists every column of every table):

- ``classes``: the class code, an optional title, the quiz seed, when the class was opened, when
  it expires and when it was ended (Unix seconds, UTC), a change counter the teacher's page
  polls (:meth:`ClassroomStore.class_version`) and the SHA-256 of the random teacher key the
  teacher's browser session holds (only that key may end or delete the class);
- ``class_cases``: the ids of the cases the class answers, in order (short neutral labels such
  as ``brain-07``, see :data:`core.quiz.CASE_ID_PATTERN`);
- ``students``: the nickname a student typed, a case-folded copy that keeps nicknames unique in
  a class, and the SHA-256 of the random token the student's browser session holds;
- ``answers``: per student and case, the diagnosis picked, the click (row, column on the image's
  own geometry) and the scores computed by :mod:`core.quiz` (click on the outline, the model's map
  peak on the outline, diagnosis correct).

No image, scan data, file name, real name, IP address, browser or device identifier is ever
stored: no scan leaves the server, and the class database only ever sees the values above.

Where: an embedded SQLite file ``classes.sqlite`` in the ``class_dir`` setting (``MEDXAI_CLASS_DIR``
or the settings file, see :mod:`core.settings`; else ``$XDG_DATA_HOME/medxai-dashboard``, else
``~/.local/share/medxai-dashboard``; a folder this module creates is made private, mode 0700, and
the file 0600). SQLite runs in WAL mode with a busy
timeout and every write takes the write lock up front (``BEGIN IMMEDIATE``), so a room of students
answering at once queue for a few milliseconds each instead of failing. Several dashboard servers
serving one class share a server database instead: any SQLAlchemy URL in the ``class_db``
setting (``MEDXAI_CLASS_DB``, or the ``url`` argument). Classes last ``class_days`` days (7 by default). The SQLite folder must be on a local disk (WAL needs shared memory).

Answers are final: a student's first answer to a case is kept; submitting the same answer again
(a page rerun) is harmless, a different one is refused with a sentence, because the point of the
quiz is a read committed before the model's is revealed.

Example
-------
>>> import tempfile
>>> store = ClassroomStore(f"sqlite:///{tempfile.mkdtemp()}/classes.sqlite")
>>> room = store.open_class(["chest-01", "brain-02"], title="Tuesday", seed=3)
>>> ada = store.join(room.code, "Ada")
>>> store.submit(room.code, ada, "chest-01", "PNEUMONIA", click=(120, 80), correct=True)
True
>>> store.case_summary(room.code, "chest-01", "PNEUMONIA")["agree_with_model"]
1.0
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from core.quiz import CASE_ID_PATTERN, Case
from core.settings import SettingsError, setting

#: Class codes: 6 characters without the look-alikes I, L, O, 0 and 1 (31**6, about 887 million).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6
NICKNAME_MAX = 24
TITLE_MAX = 80
LABEL_MAX = 64
MAX_CASES = 500
DEFAULT_DAYS = 7.0
MAX_DAYS = 365.0
DB_FILE = "classes.sqlite"
#: How long a write waits for another writer before giving up; a room of answers takes far less.
BUSY_TIMEOUT_MS = 30_000

_NICKNAME = re.compile(r"[^\W_][\w .'-]*")  # starts with a letter or digit: no formula, no dash

metadata = sa.MetaData()
classes = sa.Table(
    "classes", metadata,
    sa.Column("code", sa.String(CODE_LENGTH), primary_key=True),
    sa.Column("title", sa.String(TITLE_MAX), nullable=True),
    sa.Column("seed", sa.BigInteger, nullable=True),
    sa.Column("opened_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("teacher_sha256", sa.String(64), nullable=True),
)
class_cases = sa.Table(
    "class_cases", metadata,
    sa.Column("code", sa.ForeignKey("classes.code"), primary_key=True),
    sa.Column("case_id", sa.String(LABEL_MAX), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
)
students = sa.Table(
    "students", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code", sa.ForeignKey("classes.code"), nullable=False),
    sa.Column("nickname", sa.String(NICKNAME_MAX), nullable=False),
    sa.Column("nickname_key", sa.String(4 * NICKNAME_MAX), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.UniqueConstraint("code", "nickname_key"),
)
answers = sa.Table(
    "answers", metadata,
    sa.Column("student_id", sa.ForeignKey("students.id"), primary_key=True),
    sa.Column("case_id", sa.String(LABEL_MAX), primary_key=True),
    sa.Column("code", sa.String(CODE_LENGTH), nullable=False, index=True),
    sa.Column("diagnosis", sa.String(LABEL_MAX), nullable=False),
    sa.Column("click_row", sa.Integer, nullable=True),
    sa.Column("click_col", sa.Integer, nullable=True),
    sa.Column("click_hit", sa.Boolean, nullable=True),
    sa.Column("map_peak_hit", sa.Boolean, nullable=True),
    sa.Column("correct", sa.Boolean, nullable=True),
    sa.ForeignKeyConstraint(["code", "case_id"], ["class_cases.code", "class_cases.case_id"]),
)


class ClassError(ValueError):
    """A class action that cannot be done; ``str(err)`` is one sentence for the user."""


@dataclass(frozen=True)
class Classroom:
    """One class as the teacher opened it; times are timezone-aware UTC datetimes."""

    code: str
    title: str | None
    case_ids: tuple[str, ...]
    seed: int | None
    opened_at: datetime
    expires_at: datetime
    ended_at: datetime | None

    def status(self, now: datetime | None = None) -> str:
        """``"ended"``, ``"expired"`` or ``"open"`` at ``now`` (default: the current time)."""
        if self.ended_at is not None:
            return "ended"
        return "expired" if _seconds(now) >= self.expires_at.timestamp() else "open"


# --------------------------------------------------------------------------------- small rules

def _seconds(now: datetime | None) -> int:
    """Unix seconds of ``now`` (a naive datetime is taken as UTC), or of the current time."""
    if now is None:
        return int(time.time())
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return int(now.timestamp())


def _datetime(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)


def _code(code) -> str:
    """The code in canonical form (upper case, spaces and dashes dropped) or a sentence why not."""
    text = re.sub(r"[\s-]", "", code).upper() if isinstance(code, str) else ""
    if len(text) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in text):
        raise ClassError(f"{str(code)[:20]!r} is not a class code: a code is {CODE_LENGTH} letters and digits "
                         "as shown on the teacher's screen, like K7QM3P.")
    return text


def _nickname(nickname) -> tuple[str, str]:
    """(nickname as shown, key that keeps it unique in a class), or a sentence why not."""
    text = " ".join(unicodedata.normalize("NFKC", nickname).split()) if isinstance(nickname, str) else ""
    if not text:
        raise ClassError("Type a nickname to join the class (it need not be your real name).")
    if len(text) > NICKNAME_MAX:
        raise ClassError(f"That nickname is {len(text)} characters long; keep it to {NICKNAME_MAX} or fewer.")
    if not _NICKNAME.fullmatch(text):
        raise ClassError("A nickname may use letters, digits, spaces and . ' - _ and must start with a "
                         "letter or digit.")
    return text, text.casefold()


def _token_hash(student: str) -> str:
    return hashlib.sha256(str(student).encode("utf-8")).hexdigest()


def _setting(name: str) -> str | None:
    """A setting of :mod:`core.settings`; a broken settings file is one sentence, as a ClassError."""
    try:
        return setting(name)
    except SettingsError as err:
        raise ClassError(str(err)) from None


def _days(expires_days) -> float:
    if expires_days is None:
        expires_days = _setting("class_days") or DEFAULT_DAYS
    try:
        days = float(expires_days)
    except (TypeError, ValueError):
        days = -1.0
    if not 0 <= days <= MAX_DAYS:
        raise ClassError(f"A class lasts 0 to {MAX_DAYS:g} days (the class_days setting, MEDXAI_CLASS_DAYS); "
                          f"{expires_days!r} is not usable.")
    return days


def class_dir() -> Path:
    """The folder of the default class database: the ``class_dir`` setting (``MEDXAI_CLASS_DIR``),
    else the per-user data folder."""
    configured = _setting("class_dir")
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "medxai-dashboard"
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "medxai-dashboard"


def _private_file(path: Path) -> None:
    """Create ``path`` readable by its owner only, if it does not exist yet (SQLite's WAL and
    shared-memory files then take the same permissions)."""
    if not path.parent.is_dir():
        raise ClassError(f"The folder {path.parent} for the class database does not exist; create it or "
                         "set MEDXAI_CLASS_DIR to another folder.")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError:
        raise ClassError(f"The class database {path} cannot be created; set MEDXAI_CLASS_DIR to a folder "
                         "you can write to.") from None


def _default_url() -> str:
    folder = class_dir()
    if not folder.is_dir():
        try:
            folder.mkdir(mode=0o700, parents=True)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask
        except OSError:
            raise ClassError(f"The folder {folder} for the class database cannot be created; set "
                             "MEDXAI_CLASS_DIR to a folder you can write to.") from None
    return f"sqlite:///{folder / DB_FILE}"


def _engine(url: str) -> sa.Engine:
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ClassError("The class database address is not a SQLAlchemy URL, like "
                         "sqlite:////srv/medxai/classes.sqlite or postgresql://host/medxai.") from None
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:") or parsed.database.startswith("file:"):
        raise ClassError("The class database must be a SQLite file (sqlite:////path/classes.sqlite) or a "
                         "server database; an in-memory one would lose the class.")
    _private_file(Path(parsed.database))
    engine = sa.create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")  # the teacher's reads never block students' writes
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a power cut loses at most the last answers
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # A write takes the lock at BEGIN: a deferred transaction that reads and then writes
        # can fail at once with SQLITE_BUSY in WAL mode instead of waiting its turn.
        write = connection.get_execution_options().get("medxai_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


# --------------------------------------------------------------------------------- the store

class ClassroomStore:
    """Classes, students and answers in one SQL database (SQLite file by default).

    Parameters
    ----------
    url : str or None
        A SQLAlchemy URL. None: the ``class_db`` setting (``MEDXAI_CLASS_DB``), else
        ``classes.sqlite`` in :func:`class_dir`.

    Example
    -------
    >>> import tempfile
    >>> store = ClassroomStore(f"sqlite:///{tempfile.mkdtemp()}/c.sqlite")
    >>> store.get_class(store.open_class(["c1"]).code).status()
    'open'
    """

    def __init__(self, url: str | None = None):
        self._engine = _engine(url or _setting("class_db") or _default_url())
        self.location = self._engine.url.render_as_string(hide_password=True)
        self._create_tables()

    def close(self) -> None:
        """Close the pooled connections (a new store on the same database sees everything)."""
        self._engine.dispose()

    # ----------------------------------------------------------------- transactions

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sa.Connection]:
        try:
            with self._engine.connect() as connection:
                if write:
                    connection = connection.execution_options(medxai_write=True)
                with connection.begin():
                    yield connection
        except sa.exc.OperationalError:
            raise ClassError("The class database cannot be reached right now; try again in a moment.") from None

    def _create_tables(self) -> None:
        for attempt in range(2):  # two servers starting at once may race to create the tables
            try:
                with self._transaction(write=True) as connection:
                    metadata.create_all(connection)
                    columns = {c["name"] for c in sa.inspect(connection).get_columns("classes")}
                    if "teacher_sha256" not in columns:  # a database made before classes had a teacher key
                        connection.execute(sa.text("ALTER TABLE classes ADD COLUMN teacher_sha256 VARCHAR(64)"))
                return
            except (sa.exc.ProgrammingError, sa.exc.IntegrityError):
                if attempt:
                    raise

    def _class_row(self, connection, code: str):
        row = connection.execute(sa.select(classes).where(classes.c.code == code)).one_or_none()
        if row is None:
            raise ClassError(f"No class has the code {code}; check the code on the teacher's screen.")
        return row

    def _open_class_row(self, connection, code: str, now: int):
        row = self._class_row(connection, code)
        if row.ended_at is not None:
            raise ClassError(f"Class {code} has ended; ask the teacher for the code of a new class.")
        if now >= row.expires_at:
            raise ClassError(f"Class {code} expired on {_datetime(row.expires_at):%Y-%m-%d %H:%M} UTC; "
                             "ask the teacher to open a new class.")
        return row

    def _case_ids(self, connection, code: str) -> tuple[str, ...]:
        rows = connection.execute(sa.select(class_cases.c.case_id).where(class_cases.c.code == code)
                                  .order_by(class_cases.c.position))
        return tuple(rows.scalars())

    @staticmethod
    def _bump(connection, code: str) -> None:
        connection.execute(classes.update().where(classes.c.code == code)
                           .values(version=classes.c.version + 1))

    def _classroom(self, connection, row) -> Classroom:
        return Classroom(code=row.code, title=row.title, case_ids=self._case_ids(connection, row.code),
                         seed=row.seed, opened_at=_datetime(row.opened_at),
                         expires_at=_datetime(row.expires_at), ended_at=_datetime(row.ended_at))

    # ----------------------------------------------------------------- teacher

    def open_class(self, case_ids: Sequence[str], *, title: str | None = None, seed: int | None = None,
                   expires_days: float | None = None, now: datetime | None = None,
                   teacher: str | None = None) -> Classroom:
        """Open a class on these cases (in this order) under a new short code.

        Expired classes are purged first. ``expires_days`` defaults to the ``class_days`` setting
        (``MEDXAI_CLASS_DAYS``) or 7; 0 gives a class that has already expired (for tests).
        ``teacher`` is a secret the teacher's session keeps (e.g. :func:`new_teacher_key`); only
        its SHA-256 is stored, and once given, :meth:`end_class` and :meth:`delete_class` need it.

        Returns
        -------
        Classroom, whose ``code`` the teacher shows on screen.
        """
        case_ids = list(case_ids) if not isinstance(case_ids, str) else [case_ids]
        if not 1 <= len(case_ids) <= MAX_CASES:
            raise ClassError(f"A class needs 1 to {MAX_CASES} cases; choose the cases before opening it.")
        for case_id in case_ids:
            if not isinstance(case_id, str) or not CASE_ID_PATTERN.fullmatch(case_id):
                raise ClassError(f"The case id {str(case_id)[:70]!r} is not usable; use up to 64 letters, "
                                 "digits, '.', '_' or '-'.")
        if len(set(case_ids)) != len(case_ids):
            raise ClassError("A case appears twice in the class; give each case once.")
        if title is not None:
            title = " ".join(str(title).split())[:TITLE_MAX] or None
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or abs(seed) >= 2 ** 63):
            raise ClassError(f"The seed must be a whole number, not {seed!r}.")
        days = _days(expires_days)
        if teacher is not None and (not isinstance(teacher, str) or len(teacher) < 8):
            raise ClassError("The teacher key must be a secret of at least 8 characters.")
        opened = _seconds(now)
        self.purge_expired(now=now)
        for _ in range(20):  # a clash among ~900 million codes is rare; try another one
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            try:
                with self._transaction(write=True) as connection:
                    connection.execute(classes.insert().values(
                        code=code, title=title, seed=seed, opened_at=opened,
                        expires_at=opened + round(days * 86400), ended_at=None, version=0,
                        teacher_sha256=None if teacher is None else _token_hash(teacher)))
                    connection.execute(class_cases.insert(), [
                        {"code": code, "case_id": case_id, "position": i} for i, case_id in enumerate(case_ids)])
                    return self._classroom(connection, self._class_row(connection, code))
            except sa.exc.IntegrityError:
                continue
        raise ClassError("No free class code was found; try opening the class again.")

    def get_class(self, code: str) -> Classroom:
        """The class under ``code``, whatever its status (open, ended or expired)."""
        code = _code(code)
        with self._transaction(write=False) as connection:
            return self._classroom(connection, self._class_row(connection, code))

    def is_teacher(self, code: str, teacher: str | None) -> bool:
        """Whether ``teacher`` is the key the class was opened with (True for a class opened without one)."""
        code = _code(code)
        with self._transaction(write=False) as connection:
            return _teacher_matches(self._class_row(connection, code), teacher)

    @staticmethod
    def _check_teacher(row, teacher: str | None) -> None:
        if not _teacher_matches(row, teacher):
            raise ClassError(f"Only the teacher who opened class {row.code} can end or delete it; use the "
                             "teacher key shown when the class was opened.")

    def end_class(self, code: str, *, now: datetime | None = None, teacher: str | None = None) -> Classroom:
        """Stop accepting students and answers; the answers stay until deletion or expiry.

        ``teacher``: the key the class was opened with, when it was opened with one."""
        code = _code(code)
        with self._transaction(write=True) as connection:
            row = self._class_row(connection, code)
            self._check_teacher(row, teacher)
            if row.ended_at is None:
                connection.execute(classes.update().where(classes.c.code == code)
                                   .values(ended_at=_seconds(now), version=classes.c.version + 1))
            return self._classroom(connection, self._class_row(connection, code))

    def delete_class(self, code: str, *, teacher: str | None = None) -> int:
        """Delete the class, its students and every answer; returns how many answers were removed.

        ``teacher``: the key the class was opened with, when it was opened with one."""
        code = _code(code)
        with self._transaction(write=True) as connection:
            self._check_teacher(self._class_row(connection, code), teacher)
            return self._delete(connection, [code])

    @staticmethod
    def _delete(connection, codes: list[str]) -> int:
        removed = connection.execute(answers.delete().where(answers.c.code.in_(codes))).rowcount
        connection.execute(students.delete().where(students.c.code.in_(codes)))
        connection.execute(class_cases.delete().where(class_cases.c.code.in_(codes)))
        connection.execute(classes.delete().where(classes.c.code.in_(codes)))
        return removed

    def purge_expired(self, now: datetime | None = None) -> int:
        """Delete every class past its expiry (ended or not) with all its answers; returns how many classes."""
        with self._transaction(write=True) as connection:
            codes = list(connection.execute(sa.select(classes.c.code)
                                            .where(classes.c.expires_at <= _seconds(now))).scalars())
            if codes:
                self._delete(connection, codes)
            return len(codes)

    # ----------------------------------------------------------------- students

    def join(self, code: str, nickname: str) -> str:
        """Join an open class; returns the student's token (keep it in the session, pass it to :meth:`submit`)."""
        code = _code(code)
        shown, key = _nickname(nickname)
        token = secrets.token_urlsafe(16)
        taken = ClassError(f"The nickname {shown!r} is already taken in this class; choose another one.")
        try:
            with self._transaction(write=True) as connection:
                self._open_class_row(connection, code, _seconds(None))
                clash = connection.execute(sa.select(students.c.id).where(
                    students.c.code == code, students.c.nickname_key == key)).first()
                if clash is not None:
                    raise taken
                connection.execute(students.insert().values(
                    code=code, nickname=shown, nickname_key=key, token_sha256=_token_hash(token)))
                self._bump(connection, code)
        except sa.exc.IntegrityError:  # a server database's concurrent join with the same nickname
            raise taken from None
        return token

    def submit(self, code: str, student: str, case_id: str, diagnosis: str, click=None,
               map_peak_hit: bool | None = None, click_hit: bool | None = None,
               correct: bool | None = None) -> bool:
        """Store a student's answer to one case of an open class.

        Parameters
        ----------
        code, student : str
            The class code and the token :meth:`join` returned.
        case_id, diagnosis : str
        click : (row, col) or None
            On the image's own geometry (as :func:`core.quiz.score_answer` takes it).
        map_peak_hit, click_hit, correct : bool or None
            The scores from :func:`core.quiz.score_answer` (``map_peak_hit``, ``click_hit``,
            ``diagnosis_correct``); None when not scored.

        Returns
        -------
        True when stored; False when this very answer was already stored (a rerun). A different
        answer to a case already answered is refused: answers are final.
        """
        code = _code(code)
        if not isinstance(diagnosis, str) or not 0 < len(diagnosis) <= LABEL_MAX:
            raise ClassError("Pick a diagnosis before submitting the answer.")
        if click is not None:
            try:
                click = tuple(int(round(float(v))) for v in click)
            except (TypeError, ValueError, OverflowError):
                click = ()
            if len(click) != 2 or min(click) < 0 or max(click) >= 2 ** 31:
                raise ClassError("The click must be a (row, column) pair of pixel numbers on the image.")
        values = {"diagnosis": diagnosis, "click_row": None if click is None else click[0],
                  "click_col": None if click is None else click[1], "click_hit": _flag(click_hit),
                  "map_peak_hit": _flag(map_peak_hit), "correct": _flag(correct)}
        already = ClassError(f"You have already answered case {case_id}; answers are final once submitted.")
        try:
            with self._transaction(write=True) as connection:
                self._open_class_row(connection, code, _seconds(None))
                if case_id not in self._case_ids(connection, code):
                    raise ClassError(f"Case {str(case_id)[:70]} is not part of class {code}; answer one of its cases.")
                student_id = connection.execute(sa.select(students.c.id).where(
                    students.c.code == code, students.c.token_sha256 == _token_hash(student))).scalar()
                if student_id is None:
                    raise ClassError(f"You are not registered in class {code}; join it again with the code "
                                     "and a nickname.")
                previous = connection.execute(sa.select(*(answers.c[k] for k in values)).where(
                    answers.c.student_id == student_id, answers.c.case_id == case_id)).first()
                if previous is not None:
                    if dict(previous._mapping) == values:
                        return False
                    raise already
                connection.execute(answers.insert().values(student_id=student_id, case_id=case_id,
                                                           code=code, **values))
                self._bump(connection, code)
        except sa.exc.IntegrityError:  # a server database's concurrent double submit
            raise already from None
        return True

    def answered_cases(self, code: str, student: str) -> set[str]:
        """The case ids this student has answered (for a page reopened mid-quiz)."""
        code = _code(code)
        with self._transaction(write=False) as connection:
            rows = connection.execute(sa.select(answers.c.case_id).join(students).where(
                students.c.code == code, students.c.token_sha256 == _token_hash(student)))
            return set(rows.scalars())

    # ----------------------------------------------------------------- live view

    def class_version(self, code: str) -> int:
        """A counter that grows with every join, answer and end: poll it, redraw when it changes."""
        code = _code(code)
        with self._transaction(write=False) as connection:
            return self._class_row(connection, code).version

    def nicknames(self, code: str) -> list[str]:
        """The nicknames of the students who joined, in joining order."""
        code = _code(code)
        with self._transaction(write=False) as connection:
            self._class_row(connection, code)
            return list(connection.execute(sa.select(students.c.nickname).where(students.c.code == code)
                                           .order_by(students.c.id)).scalars())

    def class_answers(self, code: str) -> list[dict]:
        """Every answer of the class: dicts with ``nickname``, ``case_id``, ``diagnosis``, ``click``
        ((row, col) or None), ``click_hit``, ``map_peak_hit`` and ``correct``; in case order, then
        joining order."""
        code = _code(code)
        with self._transaction(write=False) as connection:
            self._class_row(connection, code)
            rows = connection.execute(
                sa.select(students.c.nickname, answers)
                .join(students, students.c.id == answers.c.student_id)
                .join(class_cases, sa.and_(class_cases.c.code == answers.c.code,
                                           class_cases.c.case_id == answers.c.case_id))
                .where(answers.c.code == code)
                .order_by(class_cases.c.position, students.c.id))
            return [_answer(row) for row in rows]

    def case_summary(self, code: str, case_id: str, model_label: str, *, true_label: str | None = None) -> dict:
        """The class's answers to one case, beside the model's.

        Parameters
        ----------
        code, case_id : str
        model_label : str
            The model's predicted label for the case.
        true_label : str or None
            The truth; None infers it from the stored ``correct`` flags where they settle it.

        Returns
        -------
        dict: ``case_id``; ``answers`` (count); ``clicks`` (list of (row, col), for a heat map);
        ``diagnoses`` ({label: count}); ``majority_diagnosis`` (None on a tie or no answer);
        ``agree_with_model``, ``correct`` and ``click_hits`` (shares, None when nothing counts);
        ``map_peak_hit``; ``class_wrong`` (fewer than half answered correctly), ``model_wrong`` and
        ``both_wrong`` (bools, None when unknown).
        """
        code = _code(code)
        rows = [a for a in self.class_answers(code) if a["case_id"] == case_id]
        if not rows and case_id not in self.get_class(code).case_ids:
            raise ClassError(f"Case {str(case_id)[:70]} is not part of class {code}; pick one of its cases.")
        return summarise_case(case_id, rows, model_label, true_label=true_label)

    def class_summary(self, code: str, cases: Sequence[Case]) -> dict:
        """Everything the teacher's live view draws, in one read.

        Parameters
        ----------
        code : str
        cases : sequence of Case
            The class's cases (their model and true labels); each must belong to the class.

        Returns
        -------
        dict: ``code``, ``title``, ``status``, ``version``, ``nicknames``, ``answers`` (count),
        ``cases`` (a :meth:`case_summary` per case, in the order given), ``both_wrong`` (case ids
        where the class and the model were both wrong), ``class_accuracy`` (share of correct
        answers over all answers) and ``model_accuracy`` (share of these cases the model got right).
        """
        code = _code(code)
        with self._transaction(write=False) as connection:  # one snapshot: counts add up
            row = self._class_row(connection, code)
            room, version = self._classroom(connection, row), row.version
            names = list(connection.execute(sa.select(students.c.nickname).where(students.c.code == code)
                                            .order_by(students.c.id)).scalars())
            rows = [_answer(row) for row in connection.execute(
                sa.select(students.c.nickname, answers).join(students, students.c.id == answers.c.student_id)
                .where(answers.c.code == code).order_by(students.c.id))]
        for case in cases:
            if case.case_id not in room.case_ids:
                raise ClassError(f"Case {case.case_id} is not part of class {code}; pick one of its cases.")
        summaries = [summarise_case(case.case_id, [r for r in rows if r["case_id"] == case.case_id],
                                    case.model_label, true_label=case.true_label) for case in cases]
        scored = [r["correct"] for r in rows if r["correct"] is not None]
        return {
            "code": code, "title": room.title, "status": room.status(), "version": version,
            "nicknames": names, "answers": len(rows), "cases": summaries,
            "both_wrong": [s["case_id"] for s in summaries if s["both_wrong"]],
            "class_accuracy": sum(scored) / len(scored) if scored else None,
            "model_accuracy": sum(c.model_correct for c in cases) / len(cases) if cases else None,
        }


def new_teacher_key() -> str:
    """A fresh random teacher key (22 URL-safe characters) for :meth:`ClassroomStore.open_class`."""
    return secrets.token_urlsafe(16)


def _teacher_matches(row, teacher: str | None) -> bool:
    if row.teacher_sha256 is None:
        return True
    return isinstance(teacher, str) and secrets.compare_digest(_token_hash(teacher), row.teacher_sha256)


def _flag(value) -> bool | None:
    return None if value is None else bool(value)


def _answer(row) -> dict:
    return {"nickname": row.nickname, "case_id": row.case_id, "diagnosis": row.diagnosis,
            "click": None if row.click_row is None else (row.click_row, row.click_col),
            "click_hit": row.click_hit, "map_peak_hit": row.map_peak_hit, "correct": row.correct}


def summarise_case(case_id: str, rows: Sequence[dict], model_label: str, *, true_label: str | None = None) -> dict:
    """The summary :meth:`ClassroomStore.case_summary` returns, from answer dicts of one case.

    Example
    -------
    >>> rows = [{"diagnosis": "a", "click": (1, 2), "click_hit": True, "map_peak_hit": None, "correct": False},
    ...         {"diagnosis": "a", "click": None, "click_hit": None, "map_peak_hit": None, "correct": False}]
    >>> summarise_case("c1", rows, "a")["both_wrong"]
    True
    """
    n = len(rows)
    diagnoses = Counter(r["diagnosis"] for r in rows)
    ranked = diagnoses.most_common()
    majority = ranked[0][0] if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) else None
    scored = [r["correct"] for r in rows if r["correct"] is not None]
    hits = [r["click_hit"] for r in rows if r["click_hit"] is not None]
    peak = next((r["map_peak_hit"] for r in rows if r["map_peak_hit"] is not None), None)
    if true_label is None:  # the labels marked correct are the truth; the model's label marked wrong is not
        right = {r["diagnosis"] for r in rows if r["correct"] is True}
        wrong = {r["diagnosis"] for r in rows if r["correct"] is False}
        model_wrong = (model_label not in right) if right else (True if model_label in wrong else None)
    else:
        model_wrong = model_label != true_label
    class_wrong = (sum(scored) < len(scored) / 2) if scored else None
    return {
        "case_id": case_id, "answers": n,
        "clicks": [r["click"] for r in rows if r["click"] is not None],
        "diagnoses": dict(ranked), "majority_diagnosis": majority,
        "agree_with_model": diagnoses[model_label] / n if n else None,
        "correct": sum(scored) / len(scored) if scored else None,
        "click_hits": sum(hits) / len(hits) if hits else None,
        "map_peak_hit": peak,
        "class_wrong": class_wrong, "model_wrong": model_wrong,
        "both_wrong": None if class_wrong is None or model_wrong is None else class_wrong and model_wrong,
    }
