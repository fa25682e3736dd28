"""Settings of `opendps serve`: one table, from which everything else is generated.

Each row of `SETTINGS` names one option. From it come, mechanically:
- the command-line flag `--<name with dashes>` (cli/main.py builds the Typer options from it);
- the environment variable `OPENDPS_<NAME>`;
- the key `<name>` in the optional TOML config file (`--config`, or `OPENDPS_CONFIG`);
- the operator documentation `docs/configuration.md` (`python -m opendps.app.config --write-docs`).

Precedence, highest first: flag > environment variable > config file > default. A setting given
by any of the first three is *explicit*; only non-explicit ports fall back to port + 8000 when
they cannot be bound (ARCHITECTURE §2).
"""

from __future__ import annotations

import argparse
import enum
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opendps.allocation.custom import DEFAULT_WEBHOOK_TIMEOUT_SECONDS
from opendps.app.maintenance import DEFAULT_OPERATION_RETENTION_SECONDS
from opendps.engine.api import (
    DEFAULT_INSTANCE_REGISTRATIONS_PER_SECOND,
    DEFAULT_POLL_LIMIT,
    DEFAULT_POLL_WINDOW_SECONDS,
    DEFAULT_TPM_CHALLENGE_TTL_SECONDS,
)
from opendps.service_api.context import DEFAULT_MAX_BODY_BYTES

# The limits' defaults and their reasons live beside the code that enforces them.
from opendps.tls.server import HANDSHAKE_TIMEOUT_SECONDS, MAX_CONNECTIONS
from opendps.transports.amqp import driver as amqp_driver
from opendps.transports.mqtt.session import CONNECT_TIMEOUT_SECONDS, MAX_PACKET_BYTES

ENV_PREFIX = "OPENDPS_"
# The config file is not itself a setting: it is where settings come from.
CONFIG_FILE_ENV = "OPENDPS_CONFIG"
DEFAULT_DATA_DIR = Path(".opendps")
DATABASE_FILE_NAME = "opendps.db"

# Standard ports: the official SDKs only dial these (protocol.md §10), so they are the defaults.
DEFAULT_HTTPS_PORT = 443
DEFAULT_MQTT_PORT = 8883
DEFAULT_AMQP_PORT = 5671
# Kubernetes sends SIGKILL 30 s after SIGTERM by default: draining for at most 20 s leaves time
# to close the store cleanly before that.
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 20.0
MAX_PORT = 65535
# ARCHITECTURE §2: a default port that cannot be bound (not root, or taken) moves up by this much
# (443 → 8443), a common unprivileged convention.
PORT_FALLBACK_OFFSET = 8000

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """An invalid setting; the message names where the value came from."""


class Kind(enum.Enum):
    """Value types a setting can have; each knows how to parse text and config-file values."""

    STR = "string"
    INT = "integer"
    SECONDS = "seconds"
    PATH = "path"
    PORT = "port"
    STR_LIST = "list of strings"


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the settings table."""

    name: str
    kind: Kind
    # The default value; None when it is derived from other settings (see `default_text`).
    default: Any
    help: str
    # How the default reads in `--help` and the docs when it is derived or not a plain value.
    default_text: str | None = None
    choices: tuple[str, ...] = ()
    # Lower bound of numeric settings (inclusive).
    minimum: float | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, tuple):
            return ", ".join(self.default)
        return str(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        Kind.PATH,
        DEFAULT_DATA_DIR,
        "Directory for the SQLite database, the dev CA, the server certificate, the admin key "
        "and state.json. Created on first start. Relative paths are relative to the current "
        "directory.",
    ),
    Setting(
        "database",
        Kind.STR,
        None,
        "Database URL. sqlite:///<path> (default) or postgresql://user[:password]@host[:port]/db "
        "to use PostgreSQL; several OpenDPS processes may share one PostgreSQL database.",
        default_text="sqlite:///<data-dir>/opendps.db",
    ),
    Setting(
        "bind",
        Kind.STR,
        None,
        "Address to listen on, such as 127.0.0.1 or ::1. Default: every interface, IPv4 and IPv6.",
        default_text="all interfaces",
    ),
    Setting(
        "https_port",
        Kind.PORT,
        DEFAULT_HTTPS_PORT,
        "HTTPS port: device REST API, WebSocket upgrades, service API, admin API, /healthz, "
        f"/metrics. If the default cannot be bound, {DEFAULT_HTTPS_PORT + PORT_FALLBACK_OFFSET} is "
        "used instead.",
    ),
    Setting(
        "mqtt_port",
        Kind.PORT,
        DEFAULT_MQTT_PORT,
        "MQTT over TLS port. If the default cannot be bound, "
        f"{DEFAULT_MQTT_PORT + PORT_FALLBACK_OFFSET} is used instead.",
    ),
    Setting(
        "amqp_port",
        Kind.PORT,
        DEFAULT_AMQP_PORT,
        "AMQP over TLS port. If the default cannot be bound, "
        f"{DEFAULT_AMQP_PORT + PORT_FALLBACK_OFFSET} is used instead.",
    ),
    Setting(
        "public_host",
        Kind.STR_LIST,
        ("localhost",),
        "Host name or address clients use to reach this server (repeatable; the first is the "
        "primary one, used in the connection string and endpoints). Each one is added to the "
        "dev server certificate, besides localhost, 127.0.0.1, ::1 and the machine's host name.",
    ),
    Setting(
        "log_level",
        Kind.STR,
        "info",
        "Lowest level of log lines written to stderr.",
        choices=LOG_LEVELS,
    ),
    Setting(
        "log_format",
        Kind.STR,
        "text",
        "Log line format: readable text, or one JSON object per line.",
        choices=LOG_FORMATS,
    ),
    Setting(
        "max_body_bytes",
        Kind.INT,
        DEFAULT_MAX_BODY_BYTES,
        "Largest HTTP request body accepted; larger bodies get 413 (Azure allows 96 KB).",
        minimum=1024,
    ),
    Setting(
        "handshake_timeout",
        Kind.SECONDS,
        HANDSHAKE_TIMEOUT_SECONDS,
        "Seconds a client may take to complete the TLS handshake before it is disconnected.",
        minimum=0.1,
    ),
    Setting(
        "max_connections",
        Kind.INT,
        MAX_CONNECTIONS,
        "Most simultaneous client connections per listener; further connections are closed "
        "at once. Raise the file-descriptor limit (ulimit -n) above this.",
        minimum=1,
    ),
    Setting(
        "shutdown_timeout",
        Kind.SECONDS,
        DEFAULT_SHUTDOWN_TIMEOUT_SECONDS,
        "On SIGTERM or SIGINT, seconds to let in-flight requests finish before connections "
        "are closed.",
        minimum=0,
    ),
    Setting(
        "workers",
        Kind.INT,
        1,
        "Server processes sharing every port (SO_REUSEPORT; Linux and macOS), to use more "
        "than one CPU core. Caches, rate limits and /metrics are per worker; use PostgreSQL "
        "with several workers (see operations.md).",
        minimum=1,
    ),
    Setting(
        "instance_registration_rate",
        Kind.INT,
        int(DEFAULT_INSTANCE_REGISTRATIONS_PER_SECOND),
        "Device registrations per second each instance accepts on this node (a token bucket "
        "with a burst of the same size); more get 429 with retry-after. 0 disables the limit.",
        minimum=0,
    ),
    Setting(
        "device_poll_limit",
        Kind.INT,
        DEFAULT_POLL_LIMIT,
        f"Status requests one device may make per {int(DEFAULT_POLL_WINDOW_SECONDS)} s (Azure: 5); "
        "more get 429 with retry-after.",
        minimum=1,
    ),
    Setting(
        "operation_retention",
        Kind.SECONDS,
        DEFAULT_OPERATION_RETENTION_SECONDS,
        "Seconds an operation is kept after its last change, for devices to poll; older ones "
        "are pruned every 5 minutes (with expired TPM challenges).",
        minimum=60,
    ),
    Setting(
        "tpm_challenge_ttl",
        Kind.SECONDS,
        DEFAULT_TPM_CHALLENGE_TTL_SECONDS,
        "Seconds a TPM device may take from its challenge to the end of its registration, "
        "polls included; after that its token is refused (401) and it starts over.",
        minimum=1,
    ),
    Setting(
        "webhook_timeout",
        Kind.SECONDS,
        DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
        "Seconds a custom allocation webhook may take to answer; slower answers fail the "
        "registration (504210).",
        minimum=0.1,
    ),
    Setting(
        "webhook_tls_verify",
        Kind.STR,
        "on",
        "Verify custom allocation webhooks' TLS certificates against the system trust store. "
        "'off' is for development webhooks with self-signed certificates only.",
        choices=("on", "off"),
    ),
    Setting(
        "region",
        Kind.STR,
        None,
        "Region this node runs in, for geoLatency allocation (compared with linked hubs' "
        "location).",
        default_text="none (geoLatency then hashes over all hubs)",
    ),
    Setting(
        "region_latency",
        Kind.STR_LIST,
        (),
        "Latency table for geoLatency, entries REGION_A:REGION_B:MILLISECONDS (symmetric, "
        "repeatable). Unlisted pairs count as far; a hub in the node's own region counts 0 ms.",
        default_text="none",
    ),
    Setting(
        "mqtt_max_packet_bytes",
        Kind.INT,
        MAX_PACKET_BYTES,
        "Largest MQTT packet accepted (TLS and WebSocket); a device announcing a larger one is "
        "disconnected (Azure's message limit is 96 KB).",
        minimum=1024,
    ),
    Setting(
        "mqtt_connect_timeout",
        Kind.SECONDS,
        CONNECT_TIMEOUT_SECONDS,
        "Seconds an MQTT client may take to send CONNECT once connected; silent clients are "
        "disconnected. After CONNECT, a client silent for 1.5 x its keep-alive is disconnected.",
        minimum=0.1,
    ),
    Setting(
        "amqp_max_frame_bytes",
        Kind.INT,
        amqp_driver.MAX_FRAME_BYTES,
        "Largest AMQP frame accepted (advertised in OPEN; TLS and WebSocket); a larger frame "
        "closes the connection.",
        minimum=512,
    ),
    Setting(
        "amqp_max_message_bytes",
        Kind.INT,
        amqp_driver.MAX_MESSAGE_BYTES,
        "Largest AMQP request message accepted (all its frames); a larger one closes the "
        "connection with amqp:link:message-size-exceeded (Azure's message limit is 96 KB).",
        minimum=1024,
    ),
    Setting(
        "amqp_idle_timeout",
        Kind.SECONDS,
        amqp_driver.IDLE_TIMEOUT_SECONDS,
        "AMQP idle timeout advertised in OPEN: a client that sends nothing, not even a "
        "heartbeat, for this long is disconnected.",
        minimum=1,
    ),
    Setting(
        "amqp_open_timeout",
        Kind.SECONDS,
        amqp_driver.OPEN_TIMEOUT_SECONDS,
        "Seconds an AMQP client may take, after the TLS handshake, to finish SASL and send "
        "OPEN; slower clients are disconnected.",
        minimum=0.1,
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved settings of one `opendps serve` process. Field names are the table's names."""

    data_dir: Path
    database: str
    # None listens on every interface.
    bind: str | None
    https_port: int
    mqtt_port: int
    amqp_port: int
    public_host: tuple[str, ...]
    log_level: str
    log_format: str
    max_body_bytes: int
    handshake_timeout: float
    max_connections: int
    shutdown_timeout: float
    workers: int = 1
    instance_registration_rate: int = int(DEFAULT_INSTANCE_REGISTRATIONS_PER_SECOND)
    device_poll_limit: int = DEFAULT_POLL_LIMIT
    operation_retention: float = DEFAULT_OPERATION_RETENTION_SECONDS
    tpm_challenge_ttl: float = DEFAULT_TPM_CHALLENGE_TTL_SECONDS
    webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT_SECONDS
    webhook_tls_verify: str = "on"
    region: str | None = None
    region_latency: tuple[str, ...] = ()
    mqtt_max_packet_bytes: int = MAX_PACKET_BYTES
    mqtt_connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    amqp_max_frame_bytes: int = amqp_driver.MAX_FRAME_BYTES
    amqp_max_message_bytes: int = amqp_driver.MAX_MESSAGE_BYTES
    amqp_idle_timeout: float = amqp_driver.IDLE_TIMEOUT_SECONDS
    amqp_open_timeout: float = amqp_driver.OPEN_TIMEOUT_SECONDS
    # Names of the settings the operator gave (flag, environment or config file).
    explicit: frozenset[str] = frozenset()

    def is_explicit(self, name: str) -> bool:
        return name in self.explicit

    @property
    def primary_host(self) -> str:
        return self.public_host[0]


# -- parsing ---------------------------------------------------------------------------------


def _parse_int(setting: Setting, value: object, source: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{source}: expected an integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise ConfigError(f"{source}: expected an integer, got {value!r}") from None
    else:
        raise ConfigError(f"{source}: expected an integer, got {value!r}")
    if setting.kind is Kind.PORT and not 0 <= number <= MAX_PORT:
        raise ConfigError(f"{source}: a port must be between 0 and {MAX_PORT}, got {number}")
    _check_minimum(setting, number, source)
    return number


def _parse_seconds(setting: Setting, value: object, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{source}: expected a number of seconds, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{source}: expected a number of seconds, got {value!r}") from None
    _check_minimum(setting, number, source)
    return number


def _check_minimum(setting: Setting, number: float, source: str) -> None:
    if setting.minimum is not None and number < setting.minimum:
        raise ConfigError(f"{source}: must be at least {setting.minimum:g}, got {number:g}")


def _parse_str(setting: Setting, value: object, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: expected a non-empty string, got {value!r}")
    text = value.strip()
    if setting.choices:
        text = text.lower()
        if text not in setting.choices:
            raise ConfigError(
                f"{source}: expected one of {', '.join(setting.choices)}, got {value!r}"
            )
    return text


def _parse_path(setting: Setting, value: object, source: str) -> Path:
    if isinstance(value, Path):
        return value
    return Path(_parse_str(setting, value, source))


def _parse_str_list(setting: Setting, value: object, source: str) -> tuple[str, ...]:
    # Environment variables carry lists comma-separated; flags and TOML give real lists.
    items: list[object]
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"{source}: expected a list of strings, got {value!r}")
    return tuple(_parse_str(setting, item, source) for item in items)


_PARSERS: dict[Kind, Callable[[Setting, object, str], Any]] = {
    Kind.STR: _parse_str,
    Kind.INT: _parse_int,
    Kind.PORT: _parse_int,
    Kind.SECONDS: _parse_seconds,
    Kind.PATH: _parse_path,
    Kind.STR_LIST: _parse_str_list,
}


def parse_value(setting: Setting, value: object, source: str) -> Any:
    """Parse one raw value (text from a flag or the environment, or a TOML value)."""
    return _PARSERS[setting.kind](setting, value, source)


def read_config_file(path: Path) -> dict[str, object]:
    """Read a TOML config file: top-level keys are setting names; unknown keys are an error."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - set(SETTINGS_BY_NAME))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return data


def _given(value: object) -> bool:
    """Flags not given on the command line arrive as None (or an empty list when repeatable)."""
    return value is not None and value != [] and value != ()


def load_settings(
    flags: Mapping[str, object],
    env: Mapping[str, str],
    config_file: Path | None = None,
    *,
    defaults: Mapping[str, object] | None = None,
) -> Settings:
    """Resolve every setting: flag > environment > config file > default.

    `flags` maps setting names to command-line values (None when not given). `defaults`
    replaces table defaults (tests inject a default port this way; a replaced default is
    still not explicit). Raises ConfigError naming the offending source.
    """
    unknown = sorted(set(flags) - set(SETTINGS_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    file_values = read_config_file(config_file) if config_file is not None else {}
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    for setting in SETTINGS:
        raw, source = _pick_source(setting, flags, env, file_values, config_file)
        if source is None:
            default = (defaults or {}).get(setting.name, setting.default)
            values[setting.name] = default
        else:
            values[setting.name] = parse_value(setting, raw, source)
            explicit.add(setting.name)
    return _finish(values, frozenset(explicit))


def _pick_source(
    setting: Setting,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    file_values: Mapping[str, object],
    config_file: Path | None,
) -> tuple[object, str | None]:
    if _given(flags.get(setting.name)):
        return flags[setting.name], setting.flag
    if env.get(setting.env, "").strip():
        return env[setting.env], setting.env
    if setting.name in file_values:
        return file_values[setting.name], f"{config_file}: {setting.name}"
    return None, None


def _finish(values: dict[str, Any], explicit: frozenset[str]) -> Settings:
    data_dir = Path(values["data_dir"]).expanduser().absolute()
    values["data_dir"] = data_dir
    if values["database"] is None:
        values["database"] = default_database_url(data_dir)
    elif not values["database"].startswith(("sqlite:", "postgresql:", "postgres:")):
        raise ConfigError(
            f"database: unsupported URL {redact_database_url(values['database'])!r}; "
            "use sqlite:///<path> or postgresql://user@host/db"
        )
    if not values["public_host"]:
        raise ConfigError("public_host: at least one host name is needed")
    values["public_host"] = tuple(values["public_host"])
    return Settings(**values, explicit=explicit)


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / DATABASE_FILE_NAME}"


def redact_database_url(url: str) -> str:
    """The URL without its password, for status output and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


# -- documentation ---------------------------------------------------------------------------

_DOCS_HEADER = """\
# Configuration

<!-- Generated from src/opendps/app/config.py by
     `python -m opendps.app.config --write-docs docs/configuration.md`; do not edit by hand.
     CI runs `--check-docs` and fails when this file is stale. -->

Every option of `opendps serve` can be given three ways, from one settings table:

- a command-line flag, e.g. `--https-port 8443`;
- an environment variable `OPENDPS_<NAME>`, e.g. `OPENDPS_HTTPS_PORT=8443`;
- a key in a TOML config file passed with `--config <file>` (or `OPENDPS_CONFIG=<file>`),
  e.g. `https_port = 8443`.

When one option is given several ways, the flag wins over the environment variable, which wins
over the config file, which wins over the default. Repeatable options take a TOML list in the
config file and a comma-separated list in the environment (`OPENDPS_PUBLIC_HOST=a.example,b.example`).

A default port that cannot be bound (not root, or in use) falls back to port + 8000, with a
warning; a port you set explicitly (by any of the three ways) never falls back: the server
refuses to start instead. See [operations.md](operations.md).

"""

_DOCS_EXAMPLE = """
## Example config file

```toml
data_dir = "/var/lib/opendps"
database = "postgresql://opendps@db.internal:5432/opendps"
public_host = ["dps.example.com", "10.0.0.5"]
https_port = 443
log_format = "json"
```
"""


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_docs() -> str:
    """docs/configuration.md, generated from SETTINGS."""
    rows = [
        "| Setting (file key) | Flag | Environment variable | Type | Default | Description |",
        "|---|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        kind = setting.kind.value
        if setting.choices:
            kind = " \\| ".join(f"`{choice}`" for choice in setting.choices)
        rows.append(
            f"| `{setting.name}` | `{setting.flag}` | `{setting.env}` | {kind} "
            f"| `{_markdown_cell(setting.shown_default)}` | {_markdown_cell(setting.help)} |"
        )
    return _DOCS_HEADER + "\n".join(rows) + "\n" + _DOCS_EXAMPLE


def check_docs(path: Path) -> bool:
    """True when `path` holds exactly what render_docs() produces."""
    try:
        return path.read_text(encoding="utf-8") == render_docs()
    except FileNotFoundError:
        return False


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opendps.app.config")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write-docs", type=Path, metavar="PATH")
    group.add_argument("--check-docs", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    if args.write_docs is not None:
        args.write_docs.write_text(render_docs(), encoding="utf-8")
        return 0
    if check_docs(args.check_docs):
        return 0
    sys.stderr.write(
        f"{args.check_docs} is stale; regenerate it with "
        f"`python -m opendps.app.config --write-docs {args.check_docs}`\n"
    )
    return 1


if __name__ == "__main__":
    sys.exit(_main())
