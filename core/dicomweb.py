"""Scans from a PACS over DICOMweb: search (QIDO-RS), retrieve (WADO-RS), send back (STOW-RS).

The client is ``dicomweb_client.api.DICOMwebClient`` on a ``requests`` session that carries the
basic-authentication credentials. Credentials come from the caller or from the environment
(``MEDXAI_DICOMWEB_USER``, ``MEDXAI_DICOMWEB_PASSWORD``) and are never shown, logged, put in a
URL or written anywhere: an address with ``user:password@`` in it is refused, error sentences
name the server by scheme, host and port only, and the records that dicomweb-client, requests,
urllib3 and pydicom would log while one of these functions runs (request URLs with UIDs and
search terms, server warnings, UIDs of failed objects) are dropped, for that thread only.

Every failure is a :class:`DicomWebError` whose ``str()`` is one sentence for the user and
whose ``kind`` says which case it is (``unreachable``, ``timeout``, ``auth``, ``empty``,
``not_image``, ``source``, ``query``, ``server``, ``protocol``, ``refused``, ``too_large``).

Patient fields of a search (name, ID, birth date, sex, accession number) are withheld unless
the caller passes ``reveal=True``, as for uploads.

Two things about Orthanc 1.10 with its DICOMweb plugin 1.7 shape this module: it does not
percent-decode QIDO query values (``StudyDescription=%2ABONE%2A`` matches nothing, and neither
does an encoded space), so searches send only letters, digits and a literal ``*``; and it
answers ``Host``-relative retrieve URLs, which dicomweb-client sends without the port, so this
module never follows a URL the server returns.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import re
import socket
from dataclasses import dataclass
from typing import Iterable, NamedTuple
from urllib.parse import urlsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from requests.auth import HTTPBasicAuth

from core.quiet import quiet, silence

#: Environment variables read when the caller passes no address or credentials.
URL_VARIABLE = "MEDXAI_DICOMWEB_URL"
USER_VARIABLE = "MEDXAI_DICOMWEB_USER"
PASSWORD_VARIABLE = "MEDXAI_DICOMWEB_PASSWORD"

#: (connect, read) seconds: a PACS on the local network connects in milliseconds; a read may
#: wait while the server fetches a series from slower storage.
DEFAULT_TIMEOUT = (5.0, 30.0)
#: Most instances one retrieval brings into memory (a large CT series is about 1,000 slices).
MAX_INSTANCES = 2000
#: Most studies one search returns.
DEFAULT_LIMIT = 100

SOURCE_PREFIX = "dicomweb:"

#: Loggers whose records, while a request runs, can carry request URLs (UIDs, search terms),
#: server warnings or header values. A logger's filters see only its own records, so each one
#: is listed rather than its parent.
QUIET_LOGGERS = (
    "dicomweb_client", "dicomweb_client.web", "dicomweb_client.api", "dicomweb_client.session_utils",
    "dicomweb_client.protocol", "dicomweb_client.uri",
    "requests", "urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
    "urllib3.response", "urllib3.util.retry", "retrying",
    "pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils",
)
silence(QUIET_LOGGERS)


class DicomWebError(Exception):
    """A DICOMweb request that could not be done; ``str(err)`` is one sentence for the user.

    ``kind`` names the case, so a page can show an empty search as information, not an error.
    """

    def __init__(self, message: str, *, kind: str):
        super().__init__(message)
        self.kind = kind


# ----------------------------------------------------------------------------- client

class _QidoSafeSession(requests.Session):
    """A session that sends ``*`` in a query string as itself, not as ``%2A``.

    dicomweb-client percent-encodes every query value and Orthanc 1.10 does not decode them,
    so a wildcard search would match nothing. A literal ``*`` is legal in a query (RFC 3986
    sub-delims) and means the same to servers that do decode.
    """

    def request(self, method, url, *args, **kwargs):
        base, mark, query = str(url).partition("?")
        if mark:
            url = base + mark + query.replace("%2A", "*")
        return super().request(method, url, *args, **kwargs)


class _HiddenBasicAuth(HTTPBasicAuth):
    """Basic authentication whose ``repr`` names neither the user nor the password."""

    def __repr__(self) -> str:
        return "<basic authentication (hidden)>"


def make_client(url: str | None = None, *, user: str | None = None, password: str | None = None,
                timeout: float | tuple[float, float] = DEFAULT_TIMEOUT):
    """A DICOMweb client for one server.

    Parameters
    ----------
    url : str, optional
        The DICOMweb root, e.g. ``http://pacs.example:8042/dicom-web``; default
        ``$MEDXAI_DICOMWEB_URL``. It must not contain a user name or password.
    user, password : str, optional
        Basic-authentication credentials; default ``$MEDXAI_DICOMWEB_USER`` and
        ``$MEDXAI_DICOMWEB_PASSWORD``. Neither given nor set: no authentication.
    timeout : float or (connect, read)
        Seconds before a request gives up; every request of this client uses it.

    Returns
    -------
    dicomweb_client.api.DICOMwebClient
        Retries are off: a busy or failing server gives its sentence at once.

    Raises
    ------
    DicomWebError
        ``source`` when the address is missing or malformed, ``auth`` when only half the
        credentials are given.

    Examples
    --------
    >>> client = make_client("http://127.0.0.1:8042/dicom-web", user="u", password="p")
    >>> client.base_url
    'http://127.0.0.1:8042/dicom-web'
    """
    url = url if url is not None else os.environ.get(URL_VARIABLE, "")
    base = _checked_base_url(url)
    user = user if user is not None else os.environ.get(USER_VARIABLE) or None
    password = password if password is not None else os.environ.get(PASSWORD_VARIABLE) or None
    if (user is None) != (password is None):
        raise DicomWebError(f"Only one of the user name and password is set; give both (or set {USER_VARIABLE} "
                            f"and {PASSWORD_VARIABLE}), or neither for a server without a login.", kind="auth")
    session = _QidoSafeSession()
    if user is not None:
        session.auth = _HiddenBasicAuth(user, password)
    _check_timeout(timeout)
    with quiet():
        client = DICOMwebClient(url=base, session=session, timeout=timeout)
    client.set_http_retry_params(retry=False)
    return client


def _check_timeout(timeout) -> None:
    values = timeout if isinstance(timeout, tuple) else (timeout,)
    if not values or len(values) > 2 or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise DicomWebError("The timeout must be a positive number of seconds, or a (connect, read) pair of them.",
                            kind="query")


_SOURCE_HELP = ("write dicomweb:http://HOST:PORT/dicom-web/studies/STUDY_UID, optionally followed by "
                "/series/SERIES_UID and /instances/INSTANCE_UID")


def _checked_base_url(url: str) -> str:
    """The DICOMweb root without a trailing slash, or a sentence that never repeats the address."""
    url = (url or "").strip()
    if not url:
        raise DicomWebError(f"No DICOMweb server is set; give its address (e.g. http://HOST:8042/dicom-web) or set "
                            f"{URL_VARIABLE}.", kind="source")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomWebError("The DICOMweb address is not an http:// or https:// address with a host name; "
                            "write it like http://HOST:8042/dicom-web.", kind="source")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise DicomWebError(f"The DICOMweb address contains a user name or password, which must never be part of an "
                            f"address; remove it and set {USER_VARIABLE} and {PASSWORD_VARIABLE} instead.",
                            kind="source")
    if parts.query or parts.fragment:
        raise DicomWebError("The DICOMweb address has a query or fragment part (after ? or #); give only the "
                            "server's DICOMweb root, e.g. http://HOST:8042/dicom-web.", kind="source")
    return url.rstrip("/")


def _server_label(client) -> str:
    """scheme://host:port of the client's server: what an error sentence may name."""
    parts = urlsplit(client.base_url)
    return f"{parts.scheme}://{parts.netloc}"


# ----------------------------------------------------------------------------- errors

@contextlib.contextmanager
def _request(client, what: str, *, missing: str | None = None):
    """Run requests quietly and turn what goes wrong into one :class:`DicomWebError`.

    ``what`` completes "while ..." in a server-error sentence; ``missing`` is the sentence for
    HTTP 404 (an object that is not on the server).
    """
    server = _server_label(client)
    try:
        with quiet():
            yield
    except DicomWebError:
        raise
    except requests.exceptions.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        message, kind = _http_sentence(status, server, what, missing)
        raise DicomWebError(message, kind=kind) from None
    except requests.exceptions.Timeout as exc:
        seconds = _timeout_seconds(client, connecting=isinstance(exc, requests.exceptions.ConnectTimeout))
        raise DicomWebError(f"The DICOMweb server at {server} did not answer within {seconds:g} seconds; it may be "
                            "busy or the address may not be a DICOMweb server, so try again later or allow a "
                            "longer timeout.", kind="timeout") from None
    except requests.exceptions.ConnectionError as exc:
        raise DicomWebError(f"Cannot reach the DICOMweb server at {server} ({_connection_reason(exc)}); check the "
                            "address and that the server is running.", kind="unreachable") from None
    except (ValueError, KeyError, IndexError, InvalidDicomError) as exc:  # not DICOM JSON / multipart / Part 10
        if isinstance(exc, requests.exceptions.InvalidURL):
            raise DicomWebError(f"The DICOMweb address is not usable; {_SOURCE_HELP}.", kind="source") from None
        raise DicomWebError(f"The server at {server} did not answer like a DICOMweb server while {what}; check that "
                            "the address is its DICOMweb root (for Orthanc, http://HOST:8042/dicom-web).",
                            kind="protocol") from None
    except requests.exceptions.RequestException:
        raise DicomWebError(f"The request to the DICOMweb server at {server} failed while {what}; check the address "
                            "and try again.", kind="unreachable") from None


def _timeout_seconds(client, *, connecting: bool) -> float:
    timeout = getattr(client, "_timeout", DEFAULT_TIMEOUT)  # dicomweb-client keeps it there
    if isinstance(timeout, tuple):
        return float(timeout[0] if connecting else timeout[-1])
    return float(timeout)


def _connection_reason(exc: BaseException) -> str:
    """A few words on why a connection failed, from the exception chain (never its text)."""
    seen = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, socket.gaierror):
            return "host name not found"
        if isinstance(current, ConnectionResetError):
            return "connection reset"
        stack.extend([current.__cause__, current.__context__, *[a for a in getattr(current, "args", ())
                                                               if isinstance(a, BaseException)]])
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    text = str(exc)  # only classified, never quoted
    if "Name or service not known" in text or "NameResolutionError" in text or "getaddrinfo" in text:
        return "host name not found"
    if "Connection refused" in text:
        return "connection refused"
    return "no connection"


def _http_sentence(status: int, server: str, what: str, missing: str | None) -> tuple[str, str]:
    if status == 401:
        return (f"The DICOMweb server at {server} refused the user name and password (HTTP 401); check "
                f"{USER_VARIABLE} and {PASSWORD_VARIABLE} or the settings.", "auth")
    if status == 403:
        return (f"The DICOMweb server at {server} does not allow this user to do this (HTTP 403); ask its "
                "administrator for access.", "auth")
    if status == 404 and missing:
        return missing, "empty"
    if status == 404:
        return (f"The server at {server} has no DICOMweb service at this address (HTTP 404); check that the address "
                "is its DICOMweb root (for Orthanc, http://HOST:8042/dicom-web).", "protocol")
    if status == 409:
        return (f"The DICOMweb server at {server} refused to store the objects, which conflict with what it holds or "
                "with the study given (HTTP 409).", "refused")
    if status == 413:
        return (f"The DICOMweb server at {server} refused the request as too large (HTTP 413).", "too_large")
    if status in (408, 504):
        return (f"The DICOMweb server at {server} timed out while {what} (HTTP {status}); try again later.",
                "timeout")
    reason = _HTTP_REASONS.get(status, "error")
    return (f"The DICOMweb server at {server} answered HTTP {status} ({reason}) while {what}; try again later or "
            "ask its administrator.", "server")


_HTTP_REASONS = {400: "bad request", 405: "method not allowed", 406: "not acceptable", 415: "unsupported media type",
                 429: "too many requests", 500: "internal server error", 501: "not implemented",
                 502: "bad gateway", 503: "service unavailable"}


# ----------------------------------------------------------------------------- search (QIDO-RS)

#: Patient and visit fields of a study row, withheld unless revealed: (row attribute, tag).
PATIENT_FIELDS = (
    ("patient_name", "00100010"), ("patient_id", "00100020"), ("patient_birth_date", "00100030"),
    ("patient_sex", "00100040"), ("accession_number", "00080050"),
)


@dataclass(frozen=True)
class StudyRow:
    """One study found by :func:`search_studies`.

    ``hidden`` names the patient fields the server sent and this row withholds; they are
    filled only with ``reveal=True``.
    """

    study_uid: str
    date: str | None
    time: str | None
    modalities: tuple[str, ...]
    description: str | None
    n_series: int | None
    n_instances: int | None
    patient_name: str | None = None
    patient_id: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    accession_number: str | None = None
    hidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeriesRow:
    """One series of a study, as :func:`search_series` finds it."""

    study_uid: str
    series_uid: str
    modality: str | None
    number: int | None
    description: str | None
    body_part: str | None
    n_instances: int | None


@dataclass(frozen=True)
class InstanceRow:
    """One instance of a series, as :func:`search_instances` finds it.

    ``has_pixels`` is the server's word (it lists Rows only for images); retrieval checks again.
    """

    study_uid: str
    series_uid: str
    instance_uid: str
    sop_class_uid: str | None
    sop_class: str | None
    number: int | None
    rows: int | None
    columns: int | None
    frames: int | None

    @property
    def has_pixels(self) -> bool:
        return bool(self.rows and self.columns)


def search_studies(client, *, modality: str | None = None, date=None, description: str | None = None,
                   limit: int = DEFAULT_LIMIT, reveal: bool = False) -> list[StudyRow]:
    """Studies on the server matching every filter given, newest first.

    Parameters
    ----------
    client : DICOMwebClient
        From :func:`make_client`.
    modality : str, optional
        A modality in the study, e.g. ``"CT"`` (ModalitiesInStudy).
    date : str, datetime.date or (start, end), optional
        ``"YYYYMMDD"``, a range ``"YYYYMMDD-YYYYMMDD"`` (either end may be left open), a date,
        or a pair of dates.
    description : str, optional
        Words of the study description, in order, any case (``"whole bone"`` finds
        "Whole Body Bone").
    limit : int
        Most rows returned.
    reveal : bool
        Keep the patient fields (name, ID, birth date, sex, accession number).

    Returns
    -------
    list of StudyRow

    Raises
    ------
    DicomWebError
        ``empty`` when no study matches (one sentence naming the filters), ``query`` for a
        malformed filter, or any request failure.

    Examples
    --------
    >>> rows = search_studies(client, modality="CT", date="20040101-20041231")  # doctest: +SKIP
    >>> rows[0].modalities, rows[0].patient_name  # doctest: +SKIP
    (('CT',), None)
    """
    filters: dict[str, str] = {}
    if modality:
        filters["ModalitiesInStudy"] = _modality(modality)
    if date is not None and date != "":
        filters["StudyDate"] = _date_query(date)
    words = _words(description)
    if words:
        filters["StudyDescription"] = "*" + "*".join(words) + "*"
    if not isinstance(limit, int) or limit < 1:
        raise DicomWebError("The limit must be a whole number of at least 1.", kind="query")
    fields = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances", "StudyDate", "StudyTime", "PatientSex"]
    with _request(client, "searching for studies"):
        found = client.search_for_studies(search_filters=filters, fields=fields, limit=limit)
        rows = [_study_row(item, reveal) for item in found]
    if words:  # the server's wildcard match is the same words; servers ignoring the filter are caught here
        rows = [row for row in rows if _words_in_order(words, row.description)]
    if not rows:
        raise DicomWebError(_no_study_sentence(modality, filters.get("StudyDate"), description), kind="empty")
    rows.sort(key=lambda row: (row.date or "", row.time or ""), reverse=True)
    return rows


def search_series(client, study_uid: str) -> list[SeriesRow]:
    """Series of one study, by series number.

    Raises
    ------
    DicomWebError
        ``empty`` when the study has no series on the server (or does not exist).

    Examples
    --------
    >>> [s.modality for s in search_series(client, rows[0].study_uid)]  # doctest: +SKIP
    ['CT']
    """
    study_uid = _uid(study_uid, "study")
    fields = ["SeriesDescription", "BodyPartExamined", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances"]
    with _request(client, "searching for series"):
        found = client.search_for_series(study_uid, fields=fields)
        rows = [SeriesRow(
            study_uid=_text(item, "0020000D") or study_uid, series_uid=_text(item, "0020000E") or "",
            modality=_text(item, "00080060"), number=_integer(item, "00200011"),
            description=_text(item, "0008103E"), body_part=_text(item, "00180015"),
            n_instances=_integer(item, "00201209"),
        ) for item in found]
    rows = [row for row in rows if row.series_uid]
    if not rows:
        raise DicomWebError("The server has no series for this study (or no such study); search the studies "
                            "again and pick one from the list.", kind="empty")
    rows.sort(key=lambda row: (row.number is None, row.number or 0))
    return rows


def search_instances(client, study_uid: str, series_uid: str) -> list[InstanceRow]:
    """Instances of one series, by instance number.

    Raises
    ------
    DicomWebError
        ``empty`` when the series has no instances on the server (or does not exist).
    """
    study_uid, series_uid = _uid(study_uid, "study"), _uid(series_uid, "series")
    fields = ["SOPClassUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"]
    with _request(client, "searching for instances"):
        found = client.search_for_instances(study_uid, series_uid, fields=fields)
        rows = []
        for item in found:
            sop_class = _text(item, "00080016")
            name = UID(sop_class).name if sop_class else None
            rows.append(InstanceRow(
                study_uid=_text(item, "0020000D") or study_uid, series_uid=_text(item, "0020000E") or series_uid,
                instance_uid=_text(item, "00080018") or "", sop_class_uid=sop_class,
                sop_class=name if name and name != sop_class else None, number=_integer(item, "00200013"),
                rows=_integer(item, "00280010"), columns=_integer(item, "00280011"),
                frames=_integer(item, "00280008"),
            ))
    rows = [row for row in rows if row.instance_uid]
    if not rows:
        raise DicomWebError("The server has no instances for this series (or no such series); search the series "
                            "again and pick one from the list.", kind="empty")
    rows.sort(key=lambda row: (row.number is None, row.number or 0))
    return rows


def _study_row(item: dict, reveal: bool) -> StudyRow:
    patient = {}
    hidden = []
    for attribute, tag in PATIENT_FIELDS:
        value = _text(item, tag)
        if value:
            if reveal:
                patient[attribute] = value
            else:
                hidden.append(attribute)
    return StudyRow(
        study_uid=_text(item, "0020000D") or "", date=_text(item, "00080020"), time=_text(item, "00080030"),
        modalities=tuple(_values(item, "00080061")), description=_text(item, "00081030"),
        n_series=_integer(item, "00201206"), n_instances=_integer(item, "00201208"),
        hidden=tuple(hidden), **patient,
    )


def _values(item: dict, tag: str) -> list:
    """The values of one attribute of a DICOM JSON object, read as plain JSON (no pydicom
    conversion, whose validation would quote odd values in warnings)."""
    element = item.get(tag) if isinstance(item, dict) else None
    values = element.get("Value") if isinstance(element, dict) else None
    out = []
    for value in values if isinstance(values, list) else []:
        if isinstance(value, dict):  # PN: {"Alphabetic": "Doe^Jane"}
            value = value.get("Alphabetic") or value.get("Ideographic") or value.get("Phonetic")
        if value is not None and str(value).strip() != "":
            out.append(value)
    return out


def _text(item: dict, tag: str) -> str | None:
    values = _values(item, tag)
    return str(values[0]).strip() if values else None


def _integer(item: dict, tag: str) -> int | None:
    values = _values(item, tag)
    try:
        return int(float(values[0])) if values else None
    except (TypeError, ValueError):
        return None


def _modality(modality: str) -> str:
    code = str(modality).strip().upper()
    if not re.fullmatch(r"[A-Z0-9_]{1,16}", code):
        raise DicomWebError("A modality is a short code of letters and digits such as CT, MR, CR or DX.",
                            kind="query")
    return code


_DATE = re.compile(r"\d{8}")


def _date_query(date) -> str:
    """StudyDate matching value: one date or a range, each end checked to be a real date."""
    if isinstance(date, (tuple, list)) and len(date) == 2:
        start, end = (_one_date(d) if d not in (None, "") else "" for d in date)
    elif isinstance(date, (_dt.date, _dt.datetime)):
        return _one_date(date)
    elif isinstance(date, str):
        text = date.strip().replace(" ", "")
        if "-" in text and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            start, _, end = text.partition("-")
            start = _one_date(start) if start else ""
            end = _one_date(end) if end else ""
        else:
            return _one_date(text)
    else:
        raise DicomWebError(_DATE_HELP, kind="query")
    if not start and not end:
        raise DicomWebError(_DATE_HELP, kind="query")
    if start and end and start > end:
        raise DicomWebError("The date range ends before it starts; give the earlier date first.", kind="query")
    return f"{start}-{end}"


_DATE_HELP = ("The study date is not a date or a range; write YYYYMMDD or YYYYMMDD-YYYYMMDD "
              "(either end may be left out).")


def _one_date(value) -> str:
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text = text.replace("-", "")
    if not _DATE.fullmatch(text):
        raise DicomWebError(_DATE_HELP, kind="query")
    try:
        _dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise DicomWebError(_DATE_HELP, kind="query") from None
    return text


def _words(description: str | None) -> list[str]:
    """Letters-and-digits words of a search text: all Orthanc 1.10 matches unencoded."""
    return re.findall(r"[^\W_]+", description or "")


def _words_in_order(words: list[str], text: str | None) -> bool:
    if not text:
        return False
    pattern = ".*".join(re.escape(w) for w in words)
    return re.search(pattern, text, flags=re.IGNORECASE | re.DOTALL) is not None


def _no_study_sentence(modality, date, description) -> str:
    parts = []
    if modality:
        parts.append(f"modality {_modality(modality)}")
    if date:
        parts.append(f"date {date}" if "-" not in date else f"dates {date}")
    if description and description.strip():
        parts.append(f"description \"{description.strip()[:80]}\"")
    if not parts:
        return "The DICOMweb server holds no studies."
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"No study on the server matches {joined}; widen the search."


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _uid(value: str, level: str) -> str:
    text = str(value or "").strip()
    if not (_UID.fullmatch(text) and len(text) <= 64):
        raise DicomWebError(f"The {level} UID is not a DICOM UID (digits and dots, at most 64 characters).",
                            kind="source")
    return text


# ----------------------------------------------------------------------------- retrieve (WADO-RS)

def retrieve_instance(client, study_uid: str, series_uid: str, instance_uid: str) -> bytes:
    """One instance as the bytes of a DICOM Part 10 file, ready for :func:`core.io.load_scan`.

    The server sends the instance in the transfer syntax it stored (no transcoding);
    ``load_scan`` says in one sentence if this installation cannot decode it.

    Raises
    ------
    DicomWebError
        ``empty`` when the instance is not on the server, ``not_image`` when it holds no
        image pixels (a structured report, an RT plan...), or any request failure.

    Examples
    --------
    >>> from core.io import load_scan
    >>> scan = load_scan(retrieve_instance(client, study, series, instance))  # doctest: +SKIP
    """
    return _instance_file(client, study_uid, series_uid, instance_uid)[1]


def _instance_file(client, study_uid: str, series_uid: str, instance_uid: str) -> tuple[str, bytes]:
    study_uid, series_uid = _uid(study_uid, "study"), _uid(series_uid, "series")
    instance_uid = _uid(instance_uid, "instance")
    missing = ("No instance with these UIDs is on the server (HTTP 404); search the series again and pick one "
               "from the list.")
    with _request(client, "retrieving an instance", missing=missing):
        dataset = client.retrieve_instance(study_uid, series_uid, instance_uid, media_types=_AS_STORED)
        if not _has_pixels(dataset):
            raise DicomWebError(_not_image_sentence([dataset]), kind="not_image")
        return _file_name(dataset, 1), _part10(dataset)


#: WADO-RS media type: Part 10 objects in the transfer syntax the server stored them in.
_AS_STORED = (("application/dicom", "*"),)


def retrieve_series(client, study_uid: str, series_uid: str, *, max_instances: int = MAX_INSTANCES) -> list[bytes]:
    """Every image instance of one series, as Part 10 bytes, by instance number.

    Instances without image pixels (a dose report stored in the series, say) are left out.

    Raises
    ------
    DicomWebError
        ``empty`` when the series is not on the server, ``not_image`` when none of its
        instances holds image pixels, ``too_large`` beyond ``max_instances``.
    """
    return [data for _, data in _series_files(client, study_uid, series_uid, max_instances=max_instances)]


def _series_files(client, study_uid: str, series_uid: str, *, max_instances: int) -> list[tuple[str, bytes]]:
    listed = search_instances(client, study_uid, series_uid)
    if len(listed) > max_instances:
        raise DicomWebError(f"The series has {len(listed)} instances, more than the {max_instances} this tool loads "
                            "at once; pick one instance or a smaller series.", kind="too_large")
    missing = "No series with these UIDs is on the server (HTTP 404); search the study again and pick one from the list."
    with _request(client, "retrieving a series", missing=missing):
        datasets = client.retrieve_series(_uid(study_uid, "study"), _uid(series_uid, "series"),
                                          media_types=_AS_STORED)
        images = [ds for ds in datasets if _has_pixels(ds)]
        if not images:
            raise DicomWebError(_not_image_sentence(datasets), kind="not_image")
        images.sort(key=_instance_order)
        return _unique_names([(_file_name(ds, i), _part10(ds)) for i, ds in enumerate(images, start=1)])


def _has_pixels(dataset) -> bool:
    return any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _not_image_sentence(datasets) -> str:
    modalities = sorted({str(ds.get("Modality") or "").strip() for ds in datasets} - {""})
    what = f" ({', '.join(modalities)})" if modalities else ""
    many = len(datasets) > 1
    return (f"{'These DICOM objects' if many else 'This DICOM object'}{what} hold{'' if many else 's'} no image "
            "pixels; pick an image series such as CR, DX, CT or MR.")


def _instance_order(dataset) -> tuple:
    number = _safe_int(dataset.get("InstanceNumber"))
    return (number is None, number or 0)


def _safe_int(value) -> int | None:
    try:
        return int(float(str(value))) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _file_name(dataset, index: int) -> str:
    """A name without UIDs: series and instance numbers when the header has them."""
    series = _safe_int(dataset.get("SeriesNumber"))
    instance = _safe_int(dataset.get("InstanceNumber"))
    return f"series{series if series is not None else 'x'}-instance{instance if instance is not None else index}.dcm"


def _part10(dataset) -> bytes:
    """The dataset as a Part 10 file: its preamble, file meta and elements as received (for
    Orthanc, byte for byte the file it stored). A server that sent no file meta gets one made
    from the dataset, so that ``load_scan`` recognises the bytes as DICOM."""
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    except (ValueError, AttributeError):  # file meta that cannot be completed: write what came
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=False)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- store (STOW-RS)

@dataclass(frozen=True)
class StoreResult:
    """What the server stored: SOP instance UIDs, in the order sent."""

    stored: tuple[str, ...]


def store(client, items: Iterable, *, study_uid: str | None = None) -> StoreResult:
    """Send DICOM objects to the server (STOW-RS), e.g. results that belong to a source study.

    Parameters
    ----------
    client : DICOMwebClient
    items : iterable of pydicom.Dataset or bytes
        Datasets, or the bytes of Part 10 files.
    study_uid : str, optional
        Store into this study only (the server refuses objects of another study).

    Returns
    -------
    StoreResult

    Raises
    ------
    DicomWebError
        ``refused`` when the server stores none or only some of them, ``query`` for an item
        that is not a DICOM dataset, or any request failure.

    Examples
    --------
    >>> store(client, [dataset]).stored  # doctest: +SKIP
    ('1.2.826.0.1.3680043.8.498.1',)
    """
    datasets = []
    with quiet():
        for item in items:
            if isinstance(item, (bytes, bytearray, memoryview)):
                try:
                    item = pydicom.dcmread(io.BytesIO(bytes(item)))
                except Exception:  # noqa: BLE001 - any parse failure is one sentence
                    raise DicomWebError("One of the objects to store is not a readable DICOM file.",
                                        kind="query") from None
            if not isinstance(item, pydicom.Dataset) or "SOPInstanceUID" not in item:
                raise DicomWebError("One of the objects to store is not a DICOM dataset with a SOP Instance UID.",
                                    kind="query")
            datasets.append(item)
    if not datasets:
        raise DicomWebError("There is nothing to store.", kind="query")
    if study_uid is not None:
        study_uid = _uid(study_uid, "study")
    with _request(client, "storing objects"):
        answer = client.store_instances(datasets, study_instance_uid=study_uid)
        failed = list(answer.get("FailedSOPSequence") or [])
        stored = tuple(str(ref.get("ReferencedSOPInstanceUID") or "") for ref in answer.get("ReferencedSOPSequence") or [])
    if failed or len(stored) < len(datasets):
        n_failed = max(len(failed), len(datasets) - len(stored))
        raise DicomWebError(f"The DICOMweb server at {_server_label(client)} refused {n_failed} of the "
                            f"{len(datasets)} object(s) sent; check that they are valid and belong to its studies.",
                            kind="refused")
    return StoreResult(stored=stored)


# ----------------------------------------------------------------------------- sources for the CLI

class DicomWebSource(NamedTuple):
    """A ``dicomweb:`` source: the server's DICOMweb root and the UIDs below it."""

    base_url: str
    study_uid: str
    series_uid: str | None = None
    instance_uid: str | None = None

    @property
    def level(self) -> str:
        return "instance" if self.instance_uid else "series" if self.series_uid else "study"


_SOURCE = re.compile(
    r"(?P<base>.+?)/studies/(?P<study>[^/]+)(?:/series/(?P<series>[^/]+)(?:/instances/(?P<instance>[^/]+))?)?/?"
)


def is_source(text: str) -> bool:
    """Whether a command-line input is meant as a DICOMweb source (starts with ``dicomweb:``)."""
    return isinstance(text, str) and text.strip().lower().startswith(SOURCE_PREFIX)


def parse_source(text: str) -> DicomWebSource:
    """Split ``dicomweb:URL`` of a study, series or instance into the DICOMweb root and UIDs.

    Examples
    --------
    >>> parse_source("dicomweb:http://127.0.0.1:8042/dicom-web/studies/1.2/series/3.4/instances/5.6")
    DicomWebSource(base_url='http://127.0.0.1:8042/dicom-web', study_uid='1.2', series_uid='3.4', instance_uid='5.6')

    Raises
    ------
    DicomWebError
        ``source``, with one sentence that shows the expected form and never repeats the text
        (it might hold a password).
    """
    if not is_source(text):
        raise DicomWebError(f"This is not a DICOMweb source; {_SOURCE_HELP}.", kind="source")
    url = text.strip()[len(SOURCE_PREFIX):]
    match = _SOURCE.fullmatch(url)
    if not match:
        raise DicomWebError(f"The DICOMweb source does not name a study; {_SOURCE_HELP}.", kind="source")
    base = _checked_base_url(match.group("base"))
    try:
        return DicomWebSource(
            base_url=base, study_uid=_uid(match.group("study"), "study"),
            series_uid=_uid(match.group("series"), "series") if match.group("series") else None,
            instance_uid=_uid(match.group("instance"), "instance") if match.group("instance") else None,
        )
    except DicomWebError as err:
        raise DicomWebError(f"{str(err)[:-1]}; {_SOURCE_HELP}.", kind="source") from None


def source_url(source: DicomWebSource) -> str:
    """The ``dicomweb:`` text of a source, the inverse of :func:`parse_source`."""
    url = f"{SOURCE_PREFIX}{source.base_url}/studies/{source.study_uid}"
    if source.series_uid:
        url += f"/series/{source.series_uid}"
        if source.instance_uid:
            url += f"/instances/{source.instance_uid}"
    return url


def fetch_source(source: str | DicomWebSource, *, client=None, user: str | None = None,
                 password: str | None = None, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
                 max_instances: int = MAX_INSTANCES) -> list[tuple[str, bytes]]:
    """The (name, Part 10 bytes) pairs a source stands for: one instance, a series' image
    instances, or every image instance of a study, by series and instance number.

    Names carry the series and instance numbers, never UIDs (``series2-instance14.dcm``).

    Parameters
    ----------
    source : str or DicomWebSource
        ``dicomweb:http://HOST:PORT/dicom-web/studies/UID[/series/UID[/instances/UID]]``.
    client : DICOMwebClient, optional
        Use this one instead of a new client for the source's server.
    user, password, timeout
        For the new client, as in :func:`make_client` (default: the environment).
    max_instances : int
        Most instances brought into memory.

    Examples
    --------
    >>> for name, data in fetch_source("dicomweb:http://127.0.0.1:8042/dicom-web/studies/1.2"):  # doctest: +SKIP
    ...     scan = load_scan(data, name)
    """
    if not isinstance(source, DicomWebSource):
        source = parse_source(source)
    if client is None:
        client = make_client(source.base_url, user=user, password=password, timeout=timeout)
    if source.instance_uid:
        return [_instance_file(client, source.study_uid, source.series_uid, source.instance_uid)]
    if source.series_uid:
        return _series_files(client, source.study_uid, source.series_uid, max_instances=max_instances)
    series = search_series(client, source.study_uid)
    listed = sum(row.n_instances or 0 for row in series)
    if listed > max_instances:
        raise DicomWebError(f"The study has {listed} instances, more than the {max_instances} this tool loads at "
                            "once; pick one of its series.", kind="too_large")
    files: list[tuple[str, bytes]] = []
    not_image = None
    for row in series:
        try:
            files.extend(_series_files(client, source.study_uid, row.series_uid, max_instances=max_instances))
        except DicomWebError as err:
            if err.kind != "not_image":
                raise
            not_image = err  # a report or plan series of the study: left out
    if not files:
        raise not_image or DicomWebError("No image of this study is on the server.", kind="empty")
    if len(files) > max_instances:
        raise DicomWebError(f"The study has {len(files)} images, more than the {max_instances} this tool loads at "
                            "once; pick one of its series.", kind="too_large")
    return _unique_names(files)


def _unique_names(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    seen: dict[str, int] = {}
    out = []
    for name, data in files:
        count = seen.get(name, 0)
        seen[name] = count + 1
        if count:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}-{count + 1}{dot}{ext}"
        out.append((name, data))
    return out
