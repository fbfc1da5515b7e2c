"""Scans from a PACS over DICOMweb, on the Scan page: search studies, pick a series or one of its images, retrieve.

The server address comes from the settings (``dicomweb_url``) or is typed in; credentials come from the
settings or the environment (``MEDXAI_DICOMWEB_USER`` / ``MEDXAI_DICOMWEB_PASSWORD``) or are typed in a
password field. They are kept in this session's memory only and never shown, logged or written. What
is retrieved becomes the session's upload, exactly as if the files had been uploaded.
"""

from __future__ import annotations

import streamlit as st

from core import dicomweb
from core.settings import SettingsError, setting
from ui.state import UPLOAD, Keys, scan_key


def pacs_client():
    """A DICOMweb client for the PACS this session connected to (its address and credentials, or the settings')."""
    pacs = st.session_state.get(Keys.PACS) or {}
    return dicomweb.make_client(pacs.get("url"), user=pacs.get("user"), password=pacs.get("password"))


def _say(err: dicomweb.DicomWebError) -> None:
    (st.info if err.kind == "empty" else st.error)(str(err))


def pacs_browser() -> None:
    """The "From a PACS" section: connect, search, pick, retrieve into the session."""
    try:
        default_url = setting("dicomweb_url") or ""
        configured_user = setting("dicomweb_user")
    except SettingsError as err:
        st.error(str(err))
        return
    pacs = st.session_state.setdefault(Keys.PACS, {})
    url = st.text_input("DICOMweb address", value=pacs.get("url") or default_url,
                        placeholder="http://pacs.example.org:8042/dicom-web",
                        help="The server's DICOMweb root (QIDO-RS, WADO-RS, STOW-RS).")
    if configured_user:
        st.caption("Credentials come from this installation's settings.")
        user, password = None, None
    else:
        cols = st.columns(2)
        user = cols[0].text_input("User", value=pacs.get("user") or "", autocomplete="username") or None
        password = cols[1].text_input("Password", value=pacs.get("password") or "", type="password",
                                      autocomplete="current-password") or None
    pacs.update(url=url or None, user=user, password=password)
    if not url:
        st.caption("Type a server's address to search it.")
        return
    search = st.columns([1, 1, 1, 2])
    modality = search[0].text_input("Modality", placeholder="CR, CT, MR…") or None
    date_from = search[1].date_input("From", value=None, format="YYYY-MM-DD")
    date_to = search[2].date_input("To", value=None, format="YYYY-MM-DD")
    description = search[3].text_input("Study description contains") or None
    if st.button("Search the PACS", icon=":material/search:"):
        date = None
        if date_from or date_to:
            date = f"{(date_from or date_to).strftime('%Y%m%d')}-{(date_to or date_from).strftime('%Y%m%d')}"
        try:
            with st.spinner("Searching…"):
                st.session_state[Keys.PACS_RESULTS] = dicomweb.search_studies(
                    pacs_client(), modality=modality, date=date, description=description,
                    reveal=bool(st.session_state.get(Keys.REVEAL, False)))
        except dicomweb.DicomWebError as err:
            st.session_state[Keys.PACS_RESULTS] = []
            _say(err)
    studies = st.session_state.get(Keys.PACS_RESULTS) or []
    if not studies:
        return
    reveal = bool(st.session_state.get(Keys.REVEAL, False))

    def study_label(i: int) -> str:
        study = studies[i]
        who = f"{study.patient_name or '?'} ({study.patient_id or '?'}), " if reveal else ""
        return (f"{who}{study.date or 'no date'} · {'/'.join(study.modalities) or '?'} · "
                f"{study.description or 'no description'} · {study.n_series or '?'} series")

    chosen = st.selectbox(f"Studies found ({len(studies)})", range(len(studies)), format_func=study_label,
                          help="Patient names and IDs are hidden unless you reveal identifiers below.")
    study = studies[chosen]
    try:
        series = dicomweb.search_series(pacs_client(), study.study_uid)
    except dicomweb.DicomWebError as err:
        _say(err)
        return
    if not series:
        return
    pick = st.selectbox("Series", range(len(series)), format_func=lambda i: (
        f"{series[i].modality or '?'} series {series[i].number if series[i].number is not None else '?'} · "
        f"{series[i].n_instances or '?'} instance(s)" + (f" · {series[i].body_part}" if series[i].body_part else "")))
    one = series[pick]
    if st.button("Open the whole series", icon=":material/stacks:"):
        _open(dicomweb.DicomWebSource(pacs["url"], one.study_uid, one.series_uid, None),
              f"PACS series {one.number if one.number is not None else ''}".strip())
    try:
        instances = [i for i in dicomweb.search_instances(pacs_client(), one.study_uid, one.series_uid) if i.has_pixels]
    except dicomweb.DicomWebError as err:
        _say(err)
        return
    if not instances:
        st.info("This series holds no image instances (it may be a report or a plan).")
        return
    instances.sort(key=lambda i: (i.number is None, i.number or 0))
    cols = st.columns([3, 1], vertical_alignment="bottom")
    which = cols[0].selectbox(f"Image of the series ({len(instances)})", range(len(instances)),
                              key=scan_key(Keys.PACS_INSTANCE, one.series_uid), format_func=lambda i: (
        f"number {instances[i].number if instances[i].number is not None else '?'} · "
        f"{instances[i].columns} x {instances[i].rows}"
        + (f" · {instances[i].frames} frames" if (instances[i].frames or 1) > 1 else "")))
    if cols[1].button("Open this image", icon=":material/image:"):
        chosen = instances[which]
        _open(dicomweb.DicomWebSource(pacs["url"], chosen.study_uid, chosen.series_uid, chosen.instance_uid),
              f"PACS image {chosen.number if chosen.number is not None else ''}".strip())


def _open(source, name: str) -> None:
    """Retrieve a source and make it the session's upload; one sentence when that fails."""
    pacs = st.session_state.get(Keys.PACS) or {}
    try:
        with st.spinner("Retrieving from the PACS…"):
            files = dicomweb.fetch_source(source, client=pacs_client())
    except dicomweb.DicomWebError as err:
        _say(err)
        return
    upload = {"name": name or "PACS", "data": files[0][1] if len(files) == 1 else b"", "pacs": source}
    if len(files) > 1:
        upload["files"] = files
    st.session_state[Keys.UPLOAD] = upload
    st.session_state[Keys.SOURCE] = UPLOAD
    st.session_state[Keys.FRAME] = None
    st.session_state[Keys.SERIES] = 0
    st.session_state[Keys.PACS] = pacs
    st.rerun()
