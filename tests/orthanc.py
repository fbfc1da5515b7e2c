"""A real, throw-away Orthanc (Debian ``/usr/sbin/Orthanc``) on loopback for the DICOMweb tests.

Not a test module: the fixtures import it. Each server gets its own temporary folder holding a
JSON configuration, the SQLite index, the stored files and Orthanc's log; nothing of the
system-wide Debian service is used (not its configuration in ``/etc/orthanc``, not its storage
in ``/var/lib/orthanc``, not its ports 8042 / 4242), so it neither needs that service nor
conflicts with it.

- HTTP on a free port chosen at start-up; the DICOM (DIMSE) server is disabled.
- ``RemoteAccessAllowed`` false (Orthanc answers loopback clients only) and HTTP basic
  authentication with a user name and password generated per server.
- The DICOMweb plugin at ``/dicom-web/``; WADO-URI, Orthanc Explorer and WebDAV off.
- Start-up polls ``/system`` until it answers, with a deadline (about 0.1 s here).
- The server is stopped and its folder removed when the context manager exits, at interpreter
  exit if it was never stopped, and Linux kills it (``PR_SET_PDEATHSIG``) if the test process
  dies without cleaning up; the folder such a process leaves is removed by the next start.

Example
-------
>>> with running_orthanc() as server:                     # doctest: +SKIP
...     server.upload(get_testdata_file("CT_small.dcm"))
...     server.url                                           # the DICOMweb root
'http://127.0.0.1:40123/dicom-web'
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from core.multiworker import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed, or it did not start."""


def _die_with_parent() -> None:
    """In the child before exec: Linux sends SIGKILL when the process that started it dies."""
    with contextlib.suppress(Exception):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(eq=False)  # compared and hashed by identity: one object per process started
class OrthancServer:
    """One running Orthanc. ``url`` is the DICOMweb root, ``rest_url`` Orthanc's own REST API."""

    folder: Path
    port: int
    user: str
    password: str = field(repr=False)
    process: subprocess.Popen | None = field(default=None, repr=False)
    startup_seconds: float = 0.0

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.rest_url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def upload(self, path_or_bytes: str | os.PathLike | bytes, *, timeout: float = 30.0) -> dict:
        """Store one DICOM file through Orthanc's REST API; returns Orthanc's answer
        (``ID``, ``ParentStudy``, ``ParentSeries``, ``Status``...)."""
        data = bytes(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) \
            else Path(path_or_bytes).read_bytes()
        response = requests.post(f"{self.rest_url}/instances", data=data, auth=self.auth, timeout=timeout,
                                 headers={"Content-Type": "application/dicom"})
        response.raise_for_status()
        return response.json()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, graceful: bool = True, timeout: float = 15.0) -> None:
        """Stop Orthanc: SIGTERM and wait (Orthanc needs about 2.5 s to close its HTTP server),
        or with ``graceful=False`` SIGKILL at once (for a server whose data nobody needs)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            if graceful:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            else:
                process.kill()
                process.wait()

    def remove(self) -> None:
        """Stop and delete the server's folder (configuration, index, stored files, log)."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _configuration(folder: Path, port: int, user: str, password: str) -> dict:
    storage = str(folder / "storage")
    return {
        "Name": "medxai-test",
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": port,
        "HttpThreadsCount": 8,
        "HttpDescribeErrors": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {user: password},
        "DicomServerEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "ExecuteLuaEnabled": False,
        "LuaScripts": [],
        "SaveJobs": False,
        "SyncStorageArea": False,  # a throw-away store need not fsync every file
        "MetricsEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
    }


def start_orthanc(*, deadline: float = 30.0, attempts: int = 3) -> OrthancServer:
    """Start a fresh Orthanc and return once ``/system`` answers; the caller stops it.

    Parameters
    ----------
    deadline : float
        Seconds to wait for one start-up before giving up.
    attempts : int
        Fresh ports to try: another process may take the free port between choosing it and
        Orthanc binding it.

    Returns
    -------
    OrthancServer

    Raises
    ------
    OrthancUnavailable
        Not installed, or it did not answer in time (the message ends with its log).
    """
    if not ORTHANC.is_file() or not DICOMWEB_PLUGIN.is_file():
        raise OrthancUnavailable(f"Orthanc ({ORTHANC}) or its DICOMweb plugin ({DICOMWEB_PLUGIN}) is not "
                                 "installed; run the set-up script with --browser (Debian orthanc, orthanc-dicomweb).")
    failure = ""
    for _ in range(attempts):
        server = _launch(deadline)
        if server.is_running():
            return server
        failure = server.log_tail()
        server.remove()
    raise OrthancUnavailable(f"Orthanc did not start:\n{failure}")


_PREFIX = "medxai-orthanc-"
_OWNER = "owner.pid"  # the pid of the test process that made the folder


def _remove_stale_folders() -> None:
    """Folders left by a test process that was killed (SIGKILL leaves no chance to clean up):
    only ours (prefix and owner file), and only when their owner is gone. Other engineers'
    live servers keep theirs."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            owner = int((folder / _OWNER).read_text())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _launch(deadline: float) -> OrthancServer:
    _remove_stale_folders()
    folder = Path(tempfile.mkdtemp(prefix=_PREFIX))
    (folder / _OWNER).write_text(str(os.getpid()))
    port = free_port("0.0.0.0")  # Orthanc binds every interface, so the probe binds the same way
    server = OrthancServer(folder=folder, port=port, user=f"medxai-{secrets.token_hex(4)}",
                           password=secrets.token_urlsafe(18))
    config = folder / "orthanc.json"
    config.write_text(json.dumps(_configuration(folder, server.port, server.user, server.password), indent=1))
    config.chmod(0o600)  # it holds the password
    started = time.perf_counter()
    with open(server.log_path, "wb") as log:
        server.process = subprocess.Popen(
            [str(ORTHANC), str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=folder, preexec_fn=_die_with_parent,
        )
    _LIVE.add(server)
    give_up = started + deadline
    with requests.Session() as session:
        session.auth = server.auth
        while time.perf_counter() < give_up:
            try:
                if session.get(f"{server.rest_url}/system", timeout=1.0).status_code == 200:
                    server.startup_seconds = time.perf_counter() - started
                    return server
            except requests.RequestException:
                pass
            # Waiting on the process doubles as the poll interval and notices an early exit at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.process.wait(timeout=0.02)
            if not server.is_running():
                break
    server.stop(graceful=False)
    return server


@contextlib.contextmanager
def running_orthanc(*, deadline: float = 30.0):
    """Context manager: a started :class:`OrthancServer`, stopped and removed on exit."""
    server = start_orthanc(deadline=deadline)
    try:
        yield server
    finally:
        server.remove()
        _LIVE.discard(server)


#: Servers started by this process; any still there at interpreter exit are stopped and removed.
_LIVE: set[OrthancServer] = set()


def _remove_leftovers() -> None:
    for server in list(_LIVE):
        server.remove()
    _LIVE.clear()


atexit.register(_remove_leftovers)
