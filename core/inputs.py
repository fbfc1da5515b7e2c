"""Inputs of a batch prediction: files, and ``dicomweb:`` sources expanded to one item per image.

``python -m core predict`` takes paths and DICOMweb sources side by side. :func:`expand_inputs`
turns them into :class:`Input` items in the order given: a file stays one item (read when it is
predicted); a ``dicomweb:`` study, series or instance becomes one item per image instance
(:func:`core.dicomweb.fetch_source`), held in memory, never written. A source that cannot be
fetched (unreachable server, timeout, refused login, nothing there, no image) is one item with
its one sentence.

Labels say where an item came from without naming anyone: a file's path as given; for a source,
the source as given (with any ``user:password@`` removed), followed for a series or study by
``#series2-instance14.dcm`` (series and instance numbers, never UIDs or patient names).

Credentials and the server's default address come from :mod:`core.settings` (environment first:
``MEDXAI_DICOMWEB_USER``, ``MEDXAI_DICOMWEB_PASSWORD``, then the settings file) and are never
shown, logged or written.

Example
-------
>>> [item.label for item in expand_inputs(["scan.dcm"])]
['scan.dcm']
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from core import dicomweb as dw

#: Seconds a DICOMweb request waits for the server's answer unless told otherwise.
DEFAULT_READ_TIMEOUT = dw.DEFAULT_TIMEOUT[1]


@dataclass(frozen=True)
class Input:
    """One thing to predict.

    Attributes
    ----------
    label : str
        What the record's ``file`` says (see the module docstring).
    stem : str
        A short name for the files written for it (unique within one expansion).
    path : str or None
        A file to read; None for an instance fetched from a server.
    data : bytes or None
        The fetched instance (Part 10 bytes); None for a file.
    source : DicomWebSource or None
        The ``dicomweb:`` source it came from (its server is where results are stored).
    error : str or None
        Why the source gave nothing (one sentence); the item has no data then.
    """

    label: str
    stem: str
    path: str | None = None
    data: bytes | None = field(default=None, repr=False)
    source: dw.DicomWebSource | None = None
    error: str | None = None

    def read(self) -> bytes:
        """The input's bytes (:class:`core.io.ScanError` with one sentence for a file that cannot be read)."""
        from core.predict import read_input

        if self.data is not None:
            return self.data
        return read_input(self.path)


def pacs_client(url: str | None = None, *, timeout: float | tuple[float, float] = dw.DEFAULT_TIMEOUT,
                environ=None, settings: dict | None = None):
    """A DICOMweb client with the installation's settings: address, user name and password.

    Parameters
    ----------
    url : str, optional
        The DICOMweb root; default the ``dicomweb_url`` setting (``MEDXAI_DICOMWEB_URL``).
    timeout : float or (connect, read)
    environ, settings : optional
        Stand-ins for ``os.environ`` and the settings file (as in :func:`core.settings.setting`).

    Raises
    ------
    core.dicomweb.DicomWebError
        As :func:`core.dicomweb.make_client`.
    core.settings.SettingsError
        A settings file that cannot be read.

    Examples
    --------
    >>> pacs_client("http://127.0.0.1:8042/dicom-web", environ={}, settings={}).base_url
    'http://127.0.0.1:8042/dicom-web'
    """
    from core.settings import setting

    def get(name):
        return setting(name, environ=environ, file=settings)

    return dw.make_client(url if url is not None else get("dicomweb_url") or "", user=get("dicomweb_user"),
                          password=get("dicomweb_password"), timeout=timeout)


def read_timeout(seconds: float) -> tuple[float, float]:
    """(connect, read) timeouts for a read timeout of ``seconds``: connecting never waits longer.

    >>> read_timeout(0.5)
    (0.5, 0.5)
    """
    return (min(dw.DEFAULT_TIMEOUT[0], float(seconds)), float(seconds))


def expand_inputs(paths, *, timeout: float = DEFAULT_READ_TIMEOUT, environ=None, settings: dict | None = None,
                  max_instances: int = dw.MAX_INSTANCES) -> list[Input]:
    """One :class:`Input` per file and per image instance of each ``dicomweb:`` source, in order.

    Parameters
    ----------
    paths : iterable of str
        File paths and ``dicomweb:URL`` sources (study, series or instance).
    timeout : float
        Seconds a DICOMweb request may wait for the server's answer.
    environ, settings : optional
        Stand-ins for ``os.environ`` and the settings file, for the credentials.
    max_instances : int
        Most instances one source brings into memory.

    Returns
    -------
    list of Input

    Raises
    ------
    core.settings.SettingsError
        Only when a source needs the settings and the settings file cannot be read.

    Examples
    --------
    >>> items = expand_inputs(["dicomweb:http://127.0.0.1:8042/dicom-web/studies/1.2"])  # doctest: +SKIP
    >>> items[0].label  # doctest: +SKIP
    'dicomweb:http://127.0.0.1:8042/dicom-web/studies/1.2#series1-instance1.dcm'
    """
    clients: dict[str, object] = {}
    items: list[Input] = []
    stems = _Stems()
    for text in (str(p) for p in paths):
        if not dw.is_source(text):
            items.append(Input(label=text, stem=stems.unique(Path(text).stem or "input"), path=text))
            continue
        label = safe_label(text)
        try:
            source = dw.parse_source(text)
            if source.base_url not in clients:
                clients[source.base_url] = pacs_client(source.base_url, timeout=read_timeout(timeout),
                                                       environ=environ, settings=settings)
            fetched = dw.fetch_source(source, client=clients[source.base_url], max_instances=max_instances)
            if source.level != "instance":
                fetched = _without_own_results(fetched)
                if not fetched:
                    raise dw.DicomWebError(f"This {source.level} holds only results written by this tool, no image "
                                           "to predict.", kind="not_image")
        except dw.DicomWebError as err:
            items.append(Input(label=label, stem=stems.unique("dicomweb"), source=None, error=str(err)))
            continue
        for name, data in fetched:
            items.append(Input(label=label if source.level == "instance" else f"{label}#{name}",
                               stem=stems.unique(Path(name).stem), data=data, source=source))
    return items


def safe_label(text: str) -> str:
    """A source as given, without a ``user:password@`` part (which the source's check refuses anyway).

    >>> safe_label("dicomweb:http://alice:secret@pacs:8042/dicom-web/studies/1.2")
    'dicomweb:http://pacs:8042/dicom-web/studies/1.2'
    """
    return re.sub(r"(?i)^(\s*dicomweb:\s*[a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", str(text)).strip()


class _Stems:
    def __init__(self):
        self.seen: dict[str, int] = {}

    def unique(self, stem: str) -> str:
        count = self.seen.get(stem, 0) + 1
        self.seen[stem] = count
        return stem if count == 1 else f"{stem}-{count}"


def _without_own_results(fetched: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A series' or study's instances without the maps and overlays this tool stored there
    (``--stow``): they hold pixels, but they are results, not images of the patient. The image
    of a PNG or JPEG upload, stored with its results, is kept."""
    import pydicom

    from core.dicom_results import MANUFACTURER, SERIES_NUMBERS
    from core.quiet import quiet

    kept = []
    for name, data in fetched:
        with quiet():
            try:
                header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - load_scan gives the sentence for an unreadable one
                kept.append((name, data))
                continue
        ours = str(header.get("Manufacturer") or "") == MANUFACTURER
        if not ours or header.get("SeriesNumber") == SERIES_NUMBERS["source"]:  # an upload's own image stays
            kept.append((name, data))
    return kept
