"""Decoders stay quiet while an upload is read (:mod:`core.quiet` applied to pydicom and Pillow).

pydicom quotes odd header values (a malformed name or UID) in its warnings and log records, and
Pillow logs TIFF tags at debug level: while a thread reads an upload, neither reaches a log.
The warnings filter is process-wide, as ``warnings`` is, so concurrent loads can race on it; that
is why identifying values are only ever read raw (:mod:`core.io.deid`), never converted by pydicom,
whose validation would quote them.
"""

from __future__ import annotations

import contextlib

from core.quiet import quiet, silence

#: Loggers of the decoders whose records can quote header values (pydicom, Pillow's TIFF tags).
DECODER_LOGGERS = (
    "pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils",
    "PIL.Image", "PIL.ImageFile", "PIL.PngImagePlugin", "PIL.TiffImagePlugin",
)


@contextlib.contextmanager
def reading():
    """This thread reads an upload: no decoder warning is shown and no decoder log record kept."""
    silence(DECODER_LOGGERS)  # the filter is attached on first use, not as a side effect of import
    with quiet():
        yield
