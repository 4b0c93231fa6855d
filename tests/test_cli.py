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


def test_production_bootstrap_without_the_demo(tmp_path: Path) -> None:
    """A real consortium starts empty: institutions and the first admin from the command line."""
    assert _huizhen(tmp_path, "migrate").returncode == 0
    steps = [
        ("--code", "rmyy", "--name-zh", "某县人民医院", "--kind", "lead_hospital"),
        (
            "--code",
            "dz",
            "--name-zh",
            "东镇卫生院",
            "--kind",
            "township_health_centre",
            "--parent",
            "rmyy",
        ),
        ("--code", "xc", "--name-zh", "西村卫生室", "--kind", "village_clinic", "--parent", "dz"),
    ]
    for step in steps:
        made = _huizhen(tmp_path, "create-institution", *step)
        assert made.returncode == 0, made.stderr
    wrong_tier = _huizhen(
        tmp_path,
        "create-institution",
        "--code",
        "bad",
        "--name-zh",
        "错",
        "--kind",
        "village_clinic",
        "--parent",
        "rmyy",
    )
    assert wrong_tier.returncode == 1
    assert "township" in wrong_tier.stderr
    admin = _huizhen(
        tmp_path,
        "create-user",
        "--username",
        "it-admin",
        "--institution",
        "rmyy",
        "--role",
        "admin",
        "--password-stdin",
        stdin="an-admin-password\n",
    )
    assert admin.returncode == 0, admin.stderr
    # The demo seed refuses a database that already holds a consortium.
    assert _huizhen(tmp_path, "seed-demo").returncode != 0
