"""TensorFlow without its start-up chatter.

Importing TensorFlow prints absl and oneDNN lines straight to file descriptor 2 (C++ logging
before ``absl::InitializeLog``), which ``TF_CPP_MIN_LOG_LEVEL`` does not stop. A command-line user
or a clinician's server log wants none of them, so the import runs with descriptor 2 pointed at
``/dev/null``; anything that goes wrong during the import is printed once it is restored.
"""

from __future__ import annotations

import os
import sys
import threading

_LOCK = threading.Lock()  # two threads swapping descriptor 2 at once could leave it pointing at /dev/null


def quiet_tensorflow() -> None:
    """Import TensorFlow (and Keras) once, silently; a no-op when it is already imported or when
    ``MEDXAI_VERBOSE=1`` asks for its log lines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("MEDXAI_VERBOSE") == "1":
        return
    with _LOCK:
        if "keras" in sys.modules:
            return
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            import tensorflow  # noqa: F401
            import keras  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
