"""The ``huizhen`` command as an operator runs it: migrate, seed-demo, create-user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.services import ROOT


def _huizhen(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUIZHEN_DATA_DIR": str(tmp_path), "HUIZHEN_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_migrate_seed_and_create_user(tmp_path: Path) -> None:
    assert _huizhen(tmp_path, "migrate").returncode == 0
    seeded = _huizhen(tmp_path, "seed-demo", "--if-empty")
    assert seeded.returncode == 0 and "seeded" in seeded.stderr
    again = _huizhen(tmp_path, "seed-demo", "--if-empty")
    assert again.returncode == 0 and "nothing seeded" in again.stderr
    assert _huizhen(tmp_path, "seed-demo").returncode != 0

    made = _huizhen(
        tmp_path,
        "create-user",
        "--username",
        "huji-doc",
        "--institution",
        "huji",
        "--role",
        "grassroots_doctor",
        "--password-stdin",
        stdin="a-strong-password\n",
    )
    assert made.returncode == 0, made.stderr
    twice = _huizhen(
        tmp_path,
        "create-user",
        "--username",
        "huji-doc",
        "--institution",
        "huji",
        "--role",
        "grassroots_doctor",
        "--password-stdin",
        stdin="a-strong-password\n",
    )
    assert twice.returncode == 1 and "taken" in twice.stderr
    wrong_role = _huizhen(
        tmp_path,
        "create-user",
        "--username",
        "bad-spec",
        "--institution",
        "huji",
        "--role",
        "specialist",
        "--centre",
        "ecg",
        "--password-stdin",
        stdin="a-strong-password\n",
    )
    assert wrong_role.returncode == 1 and "cannot belong" in wrong_role.stderr
    unknown = _huizhen(
        tmp_path,
        "create-user",
        "--username",
        "x1",
        "--institution",
        "nowhere",
        "--role",
        "supervisor",
        "--password-stdin",
        stdin="a-strong-password\n",
    )
    assert unknown.returncode != 0 and "nowhere" in unknown.stderr
