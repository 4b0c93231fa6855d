"""The one settings object: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.settings import VARIABLES, Settings, SettingsError
from tests.services import ROOT


def test_embedded_defaults() -> None:
    s = Settings.from_env({})
    assert s.port == 8080 and s.host == "127.0.0.1"
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert s.redis_url is None


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "HUIZHEN_PORT": "9000",
            "HUIZHEN_DATABASE_URL": "postgresql://u@db/h",
            "HUIZHEN_REDIS_URL": "redis://r:6379/0",
            "HUIZHEN_COOKIE_SECURE": "yes",
            "HUIZHEN_TURN_URLS": "stun:a:3478, turn:b:3478",
            "HUIZHEN_TURN_SECRET": "s3cret",
        }
    )
    assert s.port == 9000
    assert s.database_url == "postgresql+asyncpg://u@db/h"
    assert s.cookie_secure is True
    assert s.turn_urls == ("stun:a:3478", "turn:b:3478")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HUIZHEN_PORT", "eighty"),
        ("HUIZHEN_PORT", "70000"),
        ("HUIZHEN_DATABASE_URL", "mysql://x"),
        ("HUIZHEN_REDIS_URL", "http://x"),
        ("HUIZHEN_SECRET_KEY", "short"),
        ("HUIZHEN_COOKIE_SECURE", "perhaps"),
        ("HUIZHEN_SESSION_TTL_SECONDS", "-5"),
        ("HUIZHEN_LOG_LEVEL", "LOUD"),
        ("HUIZHEN_TURN_URLS", "http://turn"),
        ("HUIZHEN_DEMO_PASSWORD", "short"),
        ("HUIZHEN_TIMEZONE", "Mars/Olympus_Mons"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_turn_server_needs_a_secret() -> None:
    with pytest.raises(SettingsError, match="HUIZHEN_TURN_SECRET"):
        Settings.from_env({"HUIZHEN_TURN_URLS": "turn:t:3478"})


def test_every_variable_is_read() -> None:
    fields = {f for f in Settings.__dataclass_fields__ if f != "extra"}
    assert {v.lower() for v in VARIABLES} == fields


def test_secret_key_is_created_once_and_private(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    key = s.resolved_secret_key()
    assert len(key) >= 32
    assert s.resolved_secret_key() == key
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_bad_setting_stops_the_command_with_a_message(tmp_path: Path) -> None:
    env = {**os.environ, "HUIZHEN_PORT": "not-a-port", "HUIZHEN_DATA_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "server", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "HUIZHEN_PORT" in out.stderr and "Traceback" not in out.stderr
