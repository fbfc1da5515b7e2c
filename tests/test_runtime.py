"""core.runtime: TensorFlow imported without its start-up lines, each case in a fresh Python process (the
lines come once per process, at the import): silent when quieted, even without ``TF_CPP_MIN_LOG_LEVEL``
and from two threads at once; printed with ``MEDXAI_VERBOSE=1``; descriptor 2 always given back; a
broken TensorFlow still says why."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # each test starts a Python process that imports TensorFlow

START_UP = ("oneDNN", "absl", "This TensorFlow binary is optimized")


def run(code: str, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter from the repository, with TF_CPP_MIN_LOG_LEVEL and MEDXAI_VERBOSE
    unset unless given, and oneDNN asked for: TensorFlow turns it on by itself only on processors with
    AVX-512 neural-network instructions, and its line is the one start-up line every x86 machine then prints."""
    base = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MEDXAI_VERBOSE")}
    base["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=base | env,
                          capture_output=True, text=True, timeout=300)


def test_quieted_tensorflow_prints_nothing_even_from_two_threads_at_once():
    done = run("""
        import os, sys, threading
        before = os.readlink("/proc/self/fd/2")
        from core.runtime import quiet_tensorflow

        threads = [threading.Thread(target=quiet_tensorflow) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        quiet_tensorflow()  # already imported: nothing to do
        import keras, numpy as np
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                                  keras.layers.Dense(2, activation="softmax")])
        model.predict(np.zeros((1, 8, 8, 1), np.float32), verbose=0)  # ops run: the CPU-feature line would come now
        assert os.readlink("/proc/self/fd/2") == before, "descriptor 2 was not given back"
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"], "tensorflow" in sys.modules)
        print("still heard", file=sys.stderr)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "True"]
    assert done.stderr == "still heard\n"


def test_verbose_keeps_the_start_up_lines():
    """The control: the same import in the same environment prints the lines when asked to."""
    done = run("""
        import sys
        from core.runtime import quiet_tensorflow

        quiet_tensorflow()
        print("tensorflow" in sys.modules)
        import tensorflow
    """, MEDXAI_VERBOSE="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # a no-op: nothing imported
    assert any(line in done.stderr for line in START_UP), done.stderr


def test_a_broken_tensorflow_still_says_why_and_a_set_log_level_is_kept(tmp_path):
    broken = tmp_path / "tensorflow"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this TensorFlow build is broken')\n")
    done = run("""
        import os
        from core.runtime import quiet_tensorflow

        try:
            quiet_tensorflow()
        finally:
            print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    """, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", TF_CPP_MIN_LOG_LEVEL="1")
    assert done.returncode == 1
    assert done.stdout.strip() == "1"  # the user's own level is not overridden
    assert "ImportError: this TensorFlow build is broken" in done.stderr  # printed after descriptor 2 is back
