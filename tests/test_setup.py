"""scripts/setup.sh on Debian's own Python (issue 10, defect 5): Debian 12 and Ubuntu 24.04 refuse a
system-wide ``pip install`` (PEP 668), so the set-up must make and use a virtual environment, and the
README's two commands and ``.ci/run`` must run from it.

The script runs for real in a copy of the repository's layout with an empty ``requirements.txt`` (nothing
is downloaded or installed), with a bare environment whose PATH finds Debian's ``/usr/bin/python3`` first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = Path("/usr/bin/python3")


def externally_managed() -> bool:
    """Whether Debian's python3 refuses a system-wide pip install (its stdlib holds EXTERNALLY-MANAGED)."""
    stdlib = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()


def test_setup_makes_a_virtual_environment_with_debians_own_python(tmp_path):
    if not SYSTEM_PYTHON.is_file():
        pytest.skip("no /usr/bin/python3 on this machine")
    if not externally_managed():
        pytest.skip("/usr/bin/python3 is not marked externally managed (PEP 668): not a Debian or Ubuntu system Python")
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", clone / "scripts" / "setup.sh")  # it works from its parent folder
    (clone / "requirements.txt").write_text("")

    done = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"HOME={os.environ.get('HOME', str(tmp_path))}",
                           "bash", "scripts/setup.sh"], cwd=clone, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-2000:]
    config = (clone / ".venv" / "pyvenv.cfg").read_text()
    assert re.search(r"^home = /usr/bin$", config, re.M), config
    inside = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                             "import sys; print(sys.prefix != sys.base_prefix)"],
                            capture_output=True, text=True, check=True)
    assert inside.stdout.strip() == "True"


def section(markdown: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_the_readme_commands_and_ci_set_up_then_run_from_the_virtual_environment():
    two = section((REPO / "README.md").read_text(), "Two commands")
    commands = [block.strip() for block in re.findall(r"```bash\n(.*?)```", two, re.S)]
    assert len(commands) == 2, commands
    for command in commands:
        setup, _, run = command.partition(" && ")
        assert setup.split()[:2] == ["bash", "scripts/setup.sh"], command
        assert run.startswith(".venv/bin/"), command
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == [commands[1]]  # "exactly the README's test command"
