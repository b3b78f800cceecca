"""Configuration: the only module that reads the environment."""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from dotenv import dotenv_values

from receiver.textsafety import is_decimal


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


class Secret:
    """A string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


DEFAULT_DATABASE_URL = "sqlite:///instance/receiver.db"


@dataclass(frozen=True)
class Config:
    """Typed, validated settings (CONTRACT §2)."""

    database_url: str = DEFAULT_DATABASE_URL
    im_sdkappid: int = 1400000000
    im_secret_key: Secret | None = None
    im_admin_identifier: str = "administrator"
    im_api_base: str = "https://console.tim.qq.com"
    # Several tokens may be accepted during a rotation window (comma-separated).
    im_callback_tokens: tuple[Secret, ...] = ()
    im_callback_max_skew_seconds: int = 60
    im_rate_limit_per_second: int = 200
    confirm_timeout_seconds: int = 120
    api_tokens: tuple[Secret, ...] = ()
    redis_url: Secret | None = None
    spool_dir: Path = Path("instance/spool")
    im_callback_allowed_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    metrics_public: bool = True
    # prometheus-client reads this itself at import; we read it to know how to serve /metrics.
    prometheus_multiproc_dir: Path | None = None
    log_format: str = "text"
    log_level: str = "INFO"
    # Dispatcher tuning (not part of the contract; documented in .env.example).
    dispatch_concurrency: int = 32
    dispatch_lease_seconds: int = 60
    dispatch_max_attempts: int = 8
    im_http_timeout_seconds: float = 5.0
    # How to reach IM_API_BASE, from the usual environment variables (HTTPS_PROXY/HTTP_PROXY/
    # ALL_PROXY less NO_PROXY; REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE/SSL_CERT_FILE), resolved once.
    im_proxy_url: Secret | None = None  # may carry credentials
    im_ca_bundle: str | None = None  # a file or a directory of certificates
    # Ports of `make run` (gunicorn honours PORT through gunicorn.conf.py too).
    port: int = 8000
    imsim_port: int = 8001
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sqlite_path(self) -> Path | None:
        """The file path of a SQLite database URL, or None for other databases."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and ":memory:" not in self.database_url:
            return Path(self.database_url[len(prefix):].split("?", 1)[0])
        return None

    def __repr__(self) -> str:
        return f"Config({self.public_summary()!r})"

    def with_overrides(self, **changes: Any) -> "Config":
        return replace(self, **changes)

    def public_summary(self) -> dict[str, Any]:
        """Settings safe to print or log: secrets show only whether they are set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = "set"
            elif isinstance(value, tuple) and value and isinstance(value[0], Secret):
                value = f"{len(value)} set"
            elif f.name == "database_url":
                value = _mask_url_password(value)
            out[f.name] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
        return out


def _mask_url_password(url: str) -> str:
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
    return url


# Far above any sensible setting, far below what breaks (a date past year 9999, a float overflow).
_MAX_SECONDS = 30 * 86400


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0, maximum: int = _MAX_SECONDS) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not is_decimal(raw) or len(raw) > 19:
        raise ConfigError(f"{name} must be a whole number, got {raw[:40]!r}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(env: Mapping[str, str]) -> str:
    level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {level[:40]!r}")
    return level


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = env.get(name, "").strip()
    return Secret(raw) if raw else None


def _secret_list(env: Mapping[str, str], name: str) -> tuple[Secret, ...]:
    return tuple(Secret(t.strip()) for t in env.get(name, "").split(",") if t.strip())


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


def _networks(env: Mapping[str, str], name: str):
    nets = []
    for item in env.get(name, "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or network") from None
    return tuple(nets)


def _proxy_for(env: Mapping[str, str], url: str) -> Secret | None:
    """The proxy the environment names for `url` (as curl and requests read it), or None."""
    proxies: dict[str, str] = {}
    for name, value in env.items():
        low = name.lower()
        if low.endswith("_proxy") and value.strip():
            key = low[:-len("_proxy")]
            if name == low or key not in proxies:  # lower case wins over upper case, as in urllib
                proxies[key] = value.strip()
    target = urllib.parse.urlsplit(url)
    proxy = proxies.get(target.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(target.hostname or "", proxies):
        return None
    return Secret(proxy)


def load_config(environ: Mapping[str, str] | None = None, *, dotenv_path: str | None = ".env") -> Config:
    """Build a Config from the environment (and a `.env` file, which the environment overrides)."""
    env: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(os.environ if environ is None else environ)

    api_base = env.get("IM_API_BASE", "").strip() or Config.im_api_base
    if not api_base.startswith(("http://", "https://")):
        raise ConfigError(f"IM_API_BASE must start with http:// or https://, got {api_base!r}")
    admin = env.get("IM_ADMIN_IDENTIFIER", "").strip() or Config.im_admin_identifier
    log_format = env.get("LOG_FORMAT", "").strip().lower() or Config.log_format
    if log_format not in {"text", "json"}:
        raise ConfigError(f"LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
    database_url = env.get("DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    if database_url.startswith("postgres://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgres://"):]
    elif database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://"):]

    return Config(
        database_url=database_url,
        im_sdkappid=_int(env, "IM_SDKAPPID", Config.im_sdkappid, minimum=1, maximum=2**32 - 1),
        im_secret_key=_secret(env, "IM_SECRET_KEY"),
        im_admin_identifier=admin,
        im_api_base=api_base.rstrip("/"),
        im_callback_tokens=_secret_list(env, "IM_CALLBACK_TOKEN"),
        im_callback_max_skew_seconds=_int(env, "IM_CALLBACK_MAX_SKEW_SECONDS", 60, minimum=1),
        im_rate_limit_per_second=_int(env, "IM_RATE_LIMIT_PER_SECOND", 200, minimum=1, maximum=100_000),
        confirm_timeout_seconds=_int(env, "CONFIRM_TIMEOUT_SECONDS", 120, minimum=1),
        api_tokens=_secret_list(env, "API_TOKENS"),
        redis_url=_secret(env, "REDIS_URL"),
        spool_dir=Path(env.get("SPOOL_DIR", "").strip() or "instance/spool"),
        im_callback_allowed_ips=_networks(env, "IM_CALLBACK_ALLOWED_IPS"),
        metrics_public=_bool(env, "METRICS_PUBLIC", True),
        prometheus_multiproc_dir=Path(env["PROMETHEUS_MULTIPROC_DIR"].strip())
        if env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() else None,
        log_format=log_format,
        log_level=_log_level(env),
        dispatch_concurrency=_int(env, "DISPATCH_CONCURRENCY", 32, minimum=1, maximum=1000),
        dispatch_lease_seconds=_int(env, "DISPATCH_LEASE_SECONDS", 60, minimum=5),
        dispatch_max_attempts=_int(env, "DISPATCH_MAX_ATTEMPTS", 8, minimum=1, maximum=1000),
        im_http_timeout_seconds=float(_int(env, "IM_HTTP_TIMEOUT_SECONDS", 5, minimum=4, maximum=600)),
        im_proxy_url=_proxy_for(env, api_base),
        im_ca_bundle=(env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or env.get("SSL_CERT_FILE")
                      or "").strip() or None,
        port=_int(env, "PORT", 8000, minimum=1, maximum=65535),
        imsim_port=_int(env, "IMSIM_PORT", 8001, minimum=1, maximum=65535),
    )


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process we start: ours plus `overrides`."""
    env = dict(os.environ)
    env.update(overrides)
    return env
