"""Where model folders are found, and whether each one can be used.

A *root* is a folder of model folders. The default models live in one root (``assets/models``, or
``MEDXAI_MODELS``); further roots come from the ``extra_models`` setting (``MEDXAI_EXTRA_MODELS`` or
the settings file, :mod:`core.settings`). When none is configured, the user's own folder
:func:`user_models_dir` is the one extra root, so a model imported or trained from the dashboard
always has somewhere to go and is found again after a restart.

:func:`discover` lists every model folder of every root with the outcome of its checks
(:func:`check_folder`): a folder that fails one is listed with the reason, in one sentence, and
never raises. The checks read files only (no TensorFlow): ``model.json`` is a JSON object with
class names, preprocessing parameters the pipeline accepts and a SHA-256, ``model.keras`` exists
and matches that SHA-256, and the outlier statistics, when recorded, exist too. A hash is computed
once per file version (path, size and modification time), so listing the models on every page
run costs a few ``stat`` calls.

Folders whose name starts with a dot are skipped: a training in progress writes into
``<root>/.training/`` (:mod:`core.jobs`), never where the picker looks.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> (root / "broken").mkdir()
>>> _ = (root / "broken" / "model.json").write_text("{not json")
>>> [(m.name, m.problem) for m in discover([root])]  # doctest: +ELLIPSIS
[('broken', 'The model description .../broken/model.json is not valid JSON.')]
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from core.model import INFO_FILE, MODEL_FILE, sha256_file
from core.settings import SettingsError, setting
from core.tasks import display_title

ASSETS_MODELS = Path(__file__).resolve().parent.parent / "assets" / "models"
#: Keys a model.json must have for the dashboard to use the folder.
REQUIRED_KEYS = ("class_names", "preprocessing", "sha256")


@dataclass(frozen=True)
class ModelFolder:
    """One model folder and the outcome of its checks.

    Attributes
    ----------
    folder : Path
    root : Path
        The root it was found in.
    title : str
        Its short name (from ``model.json``; the folder name when that cannot be read).
    info : dict or None
        Its ``model.json`` (None when it cannot be read).
    problem : str or None
        Why it cannot be used, one sentence; None when it passed every check.
    default : bool
        Whether it is one of the default models (found in the default root).
    """

    folder: Path
    root: Path
    title: str
    info: dict | None
    problem: str | None = None
    default: bool = False

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def origin(self) -> str:
        """``"default"``, ``"imported"`` or ``"trained"`` (a model trained by ``python -m core train``)."""
        if self.default:
            return "default"
        return "imported" if (self.info or {}).get("imported") else "trained"


# ----------------------------------------------------------------------------- roots

def default_models_dir() -> Path:
    """The root of the default models: ``MEDXAI_MODELS`` or ``assets/models``."""
    configured = os.environ.get("MEDXAI_MODELS")
    return Path(configured) if configured else ASSETS_MODELS


def user_models_dir() -> Path:
    """The user's own root when no ``extra_models`` folder is configured:
    ``$XDG_DATA_HOME/medxai-dashboard/my-models`` (``~/.local/share/...`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "medxai-dashboard" / "my-models"


def extra_roots() -> list[Path]:
    """The configured ``extra_models`` folders, in order; :func:`user_models_dir` when none is.

    Raises :class:`core.settings.SettingsError` when the settings file cannot be read.
    """
    value = setting("extra_models") or ""
    roots = [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]
    return roots or [user_models_dir()]


def output_root() -> Path:
    """Where models imported or trained from the dashboard are written: the first extra root."""
    return extra_roots()[0]


def model_roots() -> list[Path]:
    """Every root, the default models' first."""
    return [default_models_dir(), *extra_roots()]


# ----------------------------------------------------------------------------- checks

_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def cached_sha256(path: Path) -> str:
    """:func:`core.model.sha256_file`, computed once per (path, size, modification time)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = sha256_file(path)
    with _HASH_LOCK:
        if len(_HASHES) > 256:
            _HASHES.clear()
        _HASHES[key] = digest
    return digest


def folder_problem(folder: Path, info) -> str | None:
    """Why a model folder with this ``model.json`` content cannot be used (one sentence), or None."""
    from core.preprocess import Pipeline

    if not isinstance(info, dict):
        return f"The model description {folder / INFO_FILE} is not a JSON object."
    missing = [key for key in REQUIRED_KEYS if key not in info]
    if missing:
        return f"The model description in {folder} lacks {', '.join(repr(k) for k in missing)}."
    names = info["class_names"]
    if (not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)):
        return f"The model description in {folder} must name two or more different classes in 'class_names'."
    try:
        pipeline = Pipeline.from_dict(info["preprocessing"])
        if int(pipeline.input_size) < 8 or int(pipeline.channels) not in (1, 3) or float(pipeline.std) == 0:
            raise ValueError
    except (TypeError, ValueError, AttributeError):
        return (f"The preprocessing parameters in {folder / INFO_FILE} cannot be used (they need an input size of "
                "at least 8, 1 or 3 channels and a non-zero std).")
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        return f"{folder} has no {MODEL_FILE}."
    if cached_sha256(model_path) != info["sha256"]:
        return (f"The model file in {folder} does not match the SHA-256 in its {INFO_FILE}; it may be damaged "
                "or replaced, so it is refused.")
    ood = info.get("ood")
    if ood and not (isinstance(ood, dict) and (folder / str(ood.get("file", ""))).is_file()):
        return f"The outlier statistics recorded in {folder / INFO_FILE} are missing from the folder."
    return None


def check_folder(folder: str | Path, root: str | Path | None = None, *, default: bool = False) -> ModelFolder:
    """A model folder with the outcome of its checks; never raises for a bad folder."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder.parent
    path = folder / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return ModelFolder(folder, root, folder.name, None, f"{folder} is not a model folder: it has no {INFO_FILE}.",
                           default)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ModelFolder(folder, root, folder.name, None, f"The model description {path} is not valid JSON.",
                           default)
    except OSError as err:
        return ModelFolder(folder, root, folder.name, None, f"The model description {path} cannot be read "
                                                            f"({err.strerror}).", default)
    try:
        problem = folder_problem(folder, info)
    except OSError as err:
        problem = f"The model file in {folder} cannot be read ({err.strerror})."
    title = display_title(info) if isinstance(info, dict) else folder.name
    return ModelFolder(folder, root, title, info if isinstance(info, dict) else None, problem, default)


def discover(roots: list[str | Path] | None = None) -> list[ModelFolder]:
    """Every model folder in ``roots`` (default :func:`model_roots`), root by root, by folder name.

    A sub-folder counts as a model folder when it holds ``model.json`` or ``model.keras``. A folder
    reached through two roots is listed once. A root that does not exist holds nothing. With the
    default roots, a settings file that cannot be read is listed as one unusable entry saying why.
    """
    entries: list[ModelFolder] = []
    if roots is None:
        try:
            roots = model_roots()
        except SettingsError as err:
            roots = [default_models_dir()]
            entries.append(ModelFolder(Path("settings"), Path("settings"), "Extra models", None,
                                       f"The extra model folders cannot be read: {err}"))
    default_root = default_models_dir().resolve()
    seen = set()
    for root in map(Path, roots):
        try:
            children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:  # missing, or not a folder: nothing found there
            continue
        for folder in children:
            if not ((folder / INFO_FILE).exists() or (folder / MODEL_FILE).exists()):
                continue
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
            entries.append(check_folder(folder, root, default=root.resolve() == default_root))
    return entries


def usable(entries: list[ModelFolder]) -> list[ModelFolder]:
    return [entry for entry in entries if entry.usable]


# ----------------------------------------------------------------------------- new folders

def slug(text: str, fallback: str = "model") -> str:
    """A folder and task name from a title: lower case letters, digits, ``_`` and ``-``.

    >>> slug("My knee X-ray model (v2)")
    'my_knee_x-ray_model_v2'
    """
    text = re.sub(r"[^a-z0-9_-]+", "_", str(text).strip().lower()).strip("_-")
    return text[:60] or fallback


def new_folder_path(root: str | Path, name: str) -> Path:
    """``root/<slug(name)>``, or with ``-2``, ``-3``, ... when that exists (the folder is not created)."""
    root = Path(root)
    base = slug(name)
    candidate, n = root / base, 1
    while candidate.exists() or (root / ".training" / candidate.name).exists():
        n += 1
        candidate = root / f"{base}-{n}"
    return candidate
