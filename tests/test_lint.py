"""The tree is ruff clean (the same check as `make lint`)."""

import subprocess

from tests.support import REPO, VENV_BIN

PATHS = ["metrics", "collectors", "service", "migrations", "tests", "benchmarks", "scripts"]


def test_ruff_check_is_clean():
    result = subprocess.run([str(VENV_BIN / "ruff"), "check", *PATHS], cwd=REPO, check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
