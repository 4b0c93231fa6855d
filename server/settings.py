"""One typed settings object, read once from ``HUIZHEN_*`` environment variables.

Tests build :class:`Settings` directly; ``Settings.from_env`` is for the command line.
A bad value stops start-up with a :class:`SettingsError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from server.network import Network, parse_networks

T = TypeVar("T")

PREFIX = "HUIZHEN_"


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be told from outside. Immutable once built."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("var")
    #: SQLAlchemy async URL. Empty means a SQLite file in ``data_dir``.
    database_url: str = ""
    #: Redis for several nodes; ``None`` keeps pub/sub in-process.
    redis_url: str | None = None
    #: Secret for token hashing, CSRF tokens and pseudonyms. Empty: a key file in ``data_dir``.
    secret_key: str = ""
    session_ttl_seconds: int = 12 * 3600
    cookie_secure: bool = False
    #: Largest request body in bytes for JSON and form routes (uploads have their own limits).
    max_body_bytes: int = 1024 * 1024
    #: Largest file attached to a consult, in bytes.
    max_attachment_bytes: int = 50 * 1024 * 1024
    login_max_failures: int = 5
    login_lockout_seconds: int = 300
    demo_password: str = "huizhen-demo"  # noqa: S105 - documented demo default
    log_level: str = "INFO"
    log_json: bool = False
    #: STUN/TURN URLs handed to browsers, e.g. ``turn:turn.example.org:3478``.
    turn_urls: tuple[str, ...] = ()
    #: coturn ``static-auth-secret`` for short-lived REST credentials.
    turn_secret: str = ""
    turn_ttl_seconds: int = 3600
    #: Browsers and peers use relayed (TURN) candidates only: media always passes through TURN.
    ice_relay_only: bool = False
    #: Directory of the built web front end; empty means ``web/dist`` beside the packages.
    web_dir: str = ""
    #: Apply pending migrations when the server starts.
    migrate_on_start: bool = True
    #: Number of database connections per process (PostgreSQL).
    db_pool_size: int = 10
    #: The consortium's time zone: days in figures are counted in it.
    timezone: str = "Asia/Shanghai"
    #: A critical value must be acknowledged within this time, or it repeats and escalates.
    critical_ack_seconds: int = 600
    #: A video call unanswered this long times out.
    ring_seconds: int = 60
    #: How often the watchdog looks for overdue cases and unacknowledged critical values.
    watch_interval_seconds: int = 15
    #: Reverse proxies whose ``X-Forwarded-For`` is believed (addresses or CIDR networks).
    trusted_proxies: tuple[Network, ...] = ()
    #: Largest single DICOM instance accepted (STOW-RS part, resumable upload, DIMSE C-STORE).
    max_instance_bytes: int = 1024 * 1024 * 1024
    #: Processes that check incoming DICOM while the server checks another instance (checking
    #: is Python: one process runs it on one core at a time); 0 checks everything in threads.
    #: Unset, 1 with one worker and 0 with several (the workers use the cores already, and the
    #: hop to a process costs more than the check of a plain file).
    ingest_processes: int = 1
    #: Server processes sharing ``port`` (``server.workers``); above 1 needs ``redis_url``.
    workers: int = 1
    #: Port of the DICOM (DIMSE) listener on ``host``; 0 turns it off.
    dicom_port: int = 0
    #: Our Application Entity title on DIMSE.
    dicom_ae_title: str = "HUIZHEN"
    #: Modalities allowed to send over DIMSE: AE title → code of the institution it belongs to.
    dicom_peers: tuple[tuple[str, str], ...] = ()
    #: Web origins allowed to call DICOMweb from another site (an OHIF viewer, say).
    cors_origins: tuple[str, ...] = ()
    #: Port of the HL7 v2 MLLP listener for lab results on ``host``; 0 turns it off.
    mllp_port: int = 0
    #: Laboratory systems allowed to send results over MLLP: MSH-3 name → the interface
    #: account (role ``interface``) whose name the results are filed under.
    lab_senders: tuple[tuple[str, str], ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    # -- derived values -------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'huizhen.db').resolve()}"

    @property
    def effective_web_dir(self) -> Path:
        if self.web_dir:
            return Path(self.web_dir)
        return Path(__file__).resolve().parent.parent / "web" / "dist"

    def resolved_secret_key(self) -> bytes:
        """The secret key, creating and keeping one in ``data_dir`` when none was given."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # -- reading the environment ----------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        defaults = cls()
        workers = reader.get("WORKERS", _workers, defaults.workers)
        settings = cls(
            host=reader.get("HOST", str, defaults.host),
            port=reader.get("PORT", _port, defaults.port),
            data_dir=reader.get("DATA_DIR", Path, defaults.data_dir),
            database_url=reader.get("DATABASE_URL", _database_url, defaults.database_url),
            redis_url=reader.get("REDIS_URL", _redis_url, defaults.redis_url),
            secret_key=reader.get("SECRET_KEY", _secret, defaults.secret_key),
            session_ttl_seconds=reader.get(
                "SESSION_TTL_SECONDS", _positive_int, defaults.session_ttl_seconds
            ),
            cookie_secure=reader.get("COOKIE_SECURE", _bool, defaults.cookie_secure),
            max_body_bytes=reader.get("MAX_BODY_BYTES", _positive_int, defaults.max_body_bytes),
            max_attachment_bytes=reader.get(
                "MAX_ATTACHMENT_BYTES", _positive_int, defaults.max_attachment_bytes
            ),
            login_max_failures=reader.get(
                "LOGIN_MAX_FAILURES", _positive_int, defaults.login_max_failures
            ),
            login_lockout_seconds=reader.get(
                "LOGIN_LOCKOUT_SECONDS", _positive_int, defaults.login_lockout_seconds
            ),
            demo_password=reader.get("DEMO_PASSWORD", _password, defaults.demo_password),
            log_level=reader.get("LOG_LEVEL", _log_level, defaults.log_level),
            log_json=reader.get("LOG_JSON", _bool, defaults.log_json),
            turn_urls=reader.get("TURN_URLS", _url_list, defaults.turn_urls),
            turn_secret=reader.get("TURN_SECRET", str, defaults.turn_secret),
            turn_ttl_seconds=reader.get(
                "TURN_TTL_SECONDS", _positive_int, defaults.turn_ttl_seconds
            ),
            ice_relay_only=reader.get("ICE_RELAY_ONLY", _bool, defaults.ice_relay_only),
            web_dir=reader.get("WEB_DIR", str, defaults.web_dir),
            migrate_on_start=reader.get("MIGRATE_ON_START", _bool, defaults.migrate_on_start),
            db_pool_size=reader.get("DB_POOL_SIZE", _positive_int, defaults.db_pool_size),
            timezone=reader.get("TIMEZONE", _timezone, defaults.timezone),
            critical_ack_seconds=reader.get(
                "CRITICAL_ACK_SECONDS", _positive_int, defaults.critical_ack_seconds
            ),
            ring_seconds=reader.get("RING_SECONDS", _positive_int, defaults.ring_seconds),
            watch_interval_seconds=reader.get(
                "WATCH_INTERVAL_SECONDS", _positive_int, defaults.watch_interval_seconds
            ),
            trusted_proxies=reader.get("TRUSTED_PROXIES", parse_networks, defaults.trusted_proxies),
            max_instance_bytes=reader.get(
                "MAX_INSTANCE_BYTES", _positive_int, defaults.max_instance_bytes
            ),
            ingest_processes=reader.get("INGEST_PROCESSES", _count, _ingest_default(workers)),
            workers=workers,
            dicom_port=reader.get("DICOM_PORT", _port, defaults.dicom_port),
            dicom_ae_title=reader.get("DICOM_AE_TITLE", _ae_title, defaults.dicom_ae_title),
            dicom_peers=reader.get("DICOM_PEERS", _ae_map, defaults.dicom_peers),
            cors_origins=reader.get("CORS_ORIGINS", _origins, defaults.cors_origins),
            mllp_port=reader.get("MLLP_PORT", _port, defaults.mllp_port),
            lab_senders=reader.get("LAB_SENDERS", _sender_map, defaults.lab_senders),
            extra={k: v for k, v in env.items() if k.startswith(PREFIX) and k not in reader.seen},
        )
        names_turn = any(u.startswith("turn") for u in settings.turn_urls)
        if names_turn and not settings.turn_secret:
            raise SettingsError(
                "HUIZHEN_TURN_SECRET: required when HUIZHEN_TURN_URLS names a TURN server"
            )
        if settings.workers > 1 and not settings.redis_url:
            raise SettingsError(
                "HUIZHEN_WORKERS: more than one worker needs HUIZHEN_REDIS_URL, which carries "
                "live events between the worker processes"
            )
        return settings


#: Every variable the service reads, for the documentation test and ``huizhen serve --help``.
VARIABLES: tuple[str, ...] = (
    "HOST",
    "PORT",
    "DATA_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "SESSION_TTL_SECONDS",
    "COOKIE_SECURE",
    "MAX_BODY_BYTES",
    "MAX_ATTACHMENT_BYTES",
    "LOGIN_MAX_FAILURES",
    "LOGIN_LOCKOUT_SECONDS",
    "DEMO_PASSWORD",
    "LOG_LEVEL",
    "LOG_JSON",
    "TURN_URLS",
    "TURN_SECRET",
    "TURN_TTL_SECONDS",
    "ICE_RELAY_ONLY",
    "WEB_DIR",
    "MIGRATE_ON_START",
    "DB_POOL_SIZE",
    "TRUSTED_PROXIES",
    "TIMEZONE",
    "CRITICAL_ACK_SECONDS",
    "WATCH_INTERVAL_SECONDS",
    "RING_SECONDS",
    "MAX_INSTANCE_BYTES",
    "INGEST_PROCESSES",
    "WORKERS",
    "DICOM_PORT",
    "DICOM_AE_TITLE",
    "DICOM_PEERS",
    "CORS_ORIGINS",
    "MLLP_PORT",
    "LAB_SENDERS",
)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.seen: set[str] = set()

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        key = PREFIX + name
        self.seen.add(key)
        raw = self.env.get(key)
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{key}: {exc}") from None


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {value}")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value}")
    return value


def _ingest_default(workers: int) -> int:
    """HUIZHEN_INGEST_PROCESSES unset: one ingest process beside a single worker, none beside
    several."""
    return 1 if workers == 1 else 0


def _between(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``low`` to ``high``."""

    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


_count = _between(0, 64)
_workers = _between(1, 64)


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _database_url(raw: str) -> str:
    if raw.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return raw
    if raw.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + raw.split("://", 1)[1]
    raise ValueError("expected a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return raw


def _secret(raw: str) -> str:
    if len(raw) < 32:
        raise ValueError("must be at least 32 characters")
    return raw


def _password(raw: str) -> str:
    if len(raw) < 8:
        raise ValueError("must be at least 8 characters")
    return raw


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _timezone(raw: str) -> str:
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{raw!r} is not an IANA time zone such as Asia/Shanghai") from None
    return raw


def _url_list(raw: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    for url in urls:
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
    return urls


_AE = re.compile(r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


def _ae_title(raw: str) -> str:
    title = raw.strip()
    if not _AE.match(title):
        raise ValueError("an AE title is 1 to 16 printable ASCII characters without a backslash")
    return title


def _ae_map(raw: str) -> tuple[tuple[str, str], ...]:
    """``AE=CODE,AE2=CODE2``: each modality's AE title and its institution's code."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        title, sep, code = item.partition("=")
        if not sep or not code.strip():
            raise ValueError("expected AE=INSTITUTION_CODE pairs separated by commas")
        pairs.append((_ae_title(title), code.strip()))
    if len({t for t, _ in pairs}) != len(pairs):
        raise ValueError("an AE title is listed twice")
    return tuple(pairs)


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if not re.match(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$", origin):
            raise ValueError(f"{origin!r} is not an origin such as https://viewer.example.org")
    return origins


def _sender_map(raw: str) -> tuple[tuple[str, str], ...]:
    """``LIS=lis,POCT=poct``: each sending application (MSH-3) and its interface account."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, account = item.partition("=")
        name, account = name.strip(), account.strip()
        if not sep or not name or not account or len(name) > 64 or len(account) > 64:
            raise ValueError("expected SENDING_APP=account pairs separated by commas")
        pairs.append((name, account))
    return tuple(pairs)
