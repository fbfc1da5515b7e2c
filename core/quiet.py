"""Keep libraries from logging or warning about what a thread is reading or fetching.

pydicom quotes odd header values (a malformed name or UID) in its warnings and log records;
dicomweb-client and urllib3 log request URLs, which carry UIDs and search terms. While a thread
runs inside :func:`quiet`, records from the loggers passed to :func:`silence` are dropped (for
that thread only) and warnings are ignored (process-wide, as ``warnings`` is).

Example
-------
>>> silence(["pydicom"])
>>> with quiet():
...     pass  # read a file: pydicom's records from this thread are dropped
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from typing import Iterable

_STATE = threading.local()


class _DropWhileQuiet(logging.Filter):
    """Drops a record when the thread that made it is inside :func:`quiet`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_STATE, "active", False)


_FILTER = _DropWhileQuiet()


def silence(logger_names: Iterable[str]) -> None:
    """Attach the filter to each named logger (a logger's filters see only its own records,
    not its children's, so every logger that may speak is named). Calling it again is harmless."""
    for name in logger_names:
        logging.getLogger(name).addFilter(_FILTER)  # addFilter ignores a filter already there


@contextlib.contextmanager
def quiet():
    """This thread reads or fetches something private: no warning shown, no silenced record kept."""
    previous = getattr(_STATE, "active", False)
    _STATE.active = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _STATE.active = previous
