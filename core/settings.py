"""Settings of an installation: an environment variable first, then a settings file.

The settings file is TOML, at ``MEDXAI_SETTINGS`` or ``~/.config/medxai-dashboard/settings.toml``;
each key below may appear at its top level. Nothing is needed for the defaults: with no variable and
no file every setting is unset and the dashboard runs on its committed models, embedded class
database and no PACS.

===================  =========================  ==============================================
setting              environment variable       meaning
===================  =========================  ==============================================
extra_models         MEDXAI_EXTRA_MODELS        folders of extra model folders (os.pathsep-separated)
dicomweb_url         MEDXAI_DICOMWEB_URL        a PACS's DICOMweb root, e.g. http://pacs:8042/dicom-web
dicomweb_user        MEDXAI_DICOMWEB_USER       its user name (never shown, logged or written)
dicomweb_password    MEDXAI_DICOMWEB_PASSWORD   its password (never shown, logged or written)
class_dir            MEDXAI_CLASS_DIR           the folder of the embedded class database
class_db             MEDXAI_CLASS_DB            a SQLAlchemy URL for a shared class database
class_days           MEDXAI_CLASS_DAYS          days after which a class expires
===================  =========================  ==============================================

>>> setting("class_days", environ={"MEDXAI_CLASS_DAYS": "3"}, file={})
'3'
>>> setting("class_days", environ={}, file={"class_days": 5})
'5'
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLES = {
    "extra_models": "MEDXAI_EXTRA_MODELS",
    "dicomweb_url": "MEDXAI_DICOMWEB_URL",
    "dicomweb_user": "MEDXAI_DICOMWEB_USER",
    "dicomweb_password": "MEDXAI_DICOMWEB_PASSWORD",
    "class_dir": "MEDXAI_CLASS_DIR",
    "class_db": "MEDXAI_CLASS_DB",
    "class_days": "MEDXAI_CLASS_DAYS",
}


class SettingsError(ValueError):
    """A settings file that cannot be read; ``str(err)`` is one sentence."""


def settings_file() -> Path:
    configured = os.environ.get("MEDXAI_SETTINGS")
    return Path(configured) if configured else Path.home() / ".config" / "medxai-dashboard" / "settings.toml"


def read_settings_file(path: Path | None = None) -> dict:
    """The settings file's top-level keys ({} when there is none)."""
    import tomllib

    path = path or settings_file()
    if not path.is_file():
        return {}
    try:
        values = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"The settings file {path} is not valid TOML ({err}).") from None
    unknown = set(values) - set(VARIABLES)
    if unknown:
        raise SettingsError(f"The settings file {path} has unknown settings: {', '.join(sorted(unknown))}; "
                            f"known ones are {', '.join(VARIABLES)}.")
    return values


def setting(name: str, default: str | None = None, *, environ=None, file: dict | None = None) -> str | None:
    """A setting's value as text: its environment variable, else the settings file, else ``default``."""
    if name not in VARIABLES:
        raise KeyError(f"unknown setting {name!r}")
    environ = os.environ if environ is None else environ
    value = environ.get(VARIABLES[name])
    if value not in (None, ""):
        return value
    values = read_settings_file() if file is None else file
    value = values.get(name)
    if isinstance(value, list):
        return os.pathsep.join(str(v) for v in value)
    return default if value in (None, "") else str(value)
