"""core.quiet: inside ``quiet()`` a thread's records from the silenced loggers and every warning are
dropped; other threads, other loggers and the time outside ``quiet()`` keep theirs. Real loggers,
handlers and warnings; each test uses loggers of its own, since a filter stays on its logger."""

from __future__ import annotations

import logging
import threading
import warnings

import pytest

from core.quiet import quiet, silence


class Kept(logging.Handler):
    """Every record that reaches the handler."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logger(request):
    """A logger of this test only, silenced, with a handler that keeps what reaches it."""
    log = logging.getLogger(f"medxai.test_quiet.{request.node.name}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    kept = Kept()
    log.addHandler(kept)
    silence([log.name])
    yield log, kept.messages
    log.removeHandler(kept)


def test_records_are_dropped_inside_quiet_only(logger):
    log, kept = logger
    log.warning("before: kept")
    with quiet():
        log.warning("PatientName 'DOE^JANE' is malformed")
        log.error("inside: dropped too")
    log.warning("after: kept")
    assert kept == ["before: kept", "after: kept"]


def test_another_thread_keeps_its_records_while_one_is_quiet(logger):
    log, kept = logger
    inside, spoken = threading.Event(), threading.Event()

    def reader():
        with quiet():
            inside.set()
            log.warning("reader: dropped")
            spoken.wait(10)

    thread = threading.Thread(target=reader)
    thread.start()
    assert inside.wait(10)
    log.warning("other thread: kept")
    spoken.set()
    thread.join(10)
    assert kept == ["other thread: kept"]


def test_warnings_are_ignored_inside_quiet_and_the_filters_come_back():
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet():
            warnings.warn("Invalid value for VR UI: '1.2.3.4.5.DOE'", UserWarning)
        warnings.warn("outside: shown", UserWarning)
    assert [str(w.message) for w in caught] == ["outside: shown"]
    assert warnings.filters == filters


def test_nested_quiet_and_an_exception_restore_the_previous_state(logger):
    log, kept = logger
    with quiet():
        with quiet():
            pass
        log.warning("still inside the outer quiet(): dropped")
    with pytest.raises(RuntimeError):
        with quiet():
            raise RuntimeError("a decoder failed")
    log.warning("after the exception: kept")
    assert kept == ["after the exception: kept"]


def test_only_the_named_loggers_are_silenced(logger):
    log, kept = logger
    unnamed = logging.getLogger(f"{log.name}-other")
    unnamed.setLevel(logging.DEBUG)
    unnamed.propagate = False
    other = Kept()
    unnamed.addHandler(other)
    child = log.getChild("child")  # a logger's filters do not see its children's records
    with quiet():
        unnamed.warning("not named: kept")
        child.warning("child not named: kept")
    unnamed.removeHandler(other)
    assert other.messages == ["not named: kept"] and kept == ["child not named: kept"]


def test_silencing_twice_attaches_one_filter(logger):
    log, _ = logger
    silence([log.name])
    silence([log.name, log.name])
    assert len(log.filters) == 1
