"""How the CLI reaches a running server: over HTTPS, never to its database.

A connection comes from, in this order:
1. `--connection-string` / `OPENDPS_CONNECTION_STRING`: an instance access policy. Service API
   calls are signed with it; admin calls too (the policy needs ServiceConfig, and reaches only
   its own instance).
2. The local data dir (`--data-dir` / `OPENDPS_DATA_DIR`, default `./.opendps`): state.json
   names the HTTPS endpoint, the dev CA and the default instance's connection string, and the
   admin key file; admin calls use the admin key. `--instance NAME` picks another instance:
   its owner key is fetched through the admin API and signs the service calls.
The dev CA from state.json (or `--ca-certificate`) is trusted for TLS.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from opendps.admin_api.schemas import WireModel, describe_validation_error
from opendps.app.config import DEFAULT_DATA_DIR
from opendps.app.status import ServerState, StatusError, read_state
from opendps.attestation.sas import build_sas_token
from opendps.model.instance import OWNER_POLICY_NAME

ADMIN_BASE_PATH = "/admin/v1"
# The only DPS service API version the CLI speaks; the server answers every version with its shapes.
SERVICE_API_VERSION = "2021-10-01"
# Tokens the CLI signs live an hour, like the Node and Python service clients' (protocol.md §2.2).
SAS_TTL_SECONDS = 3600
# Long enough for an import of millions of lines to be answered; a dead server still fails fast
# because connecting is bounded by the OS.
HTTP_TIMEOUT_SECONDS = 600.0
_CONNECTION_STRING_FIELDS = ("HostName", "SharedAccessKeyName", "SharedAccessKey")


class CliError(Exception):
    """A failure to show the operator (never carrying a key)."""


class ApiError(CliError):
    """The server answered with a DPS error body."""

    def __init__(self, status: int, error_code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def __str__(self) -> str:
        code = f" (errorCode {self.error_code})" if self.error_code is not None else ""
        return f"{self.message}{code}"


@dataclass(frozen=True, slots=True)
class PolicyCredential:
    """An access policy: the host it signs for (`sr`, also sent as Host) and one of its keys."""

    host: str
    policy_name: str
    key: str

    def token(self, now: float) -> str:
        expiry = int(now) + SAS_TTL_SECONDS
        return build_sas_token(self.host, self.key, expiry, key_name=self.policy_name)


def parse_connection_string(text: str) -> PolicyCredential:
    """`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` (protocol.md §7.4)."""
    fields: dict[str, str] = {}
    for part in text.strip().split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip()] = value.strip()
    missing = [name for name in _CONNECTION_STRING_FIELDS if not fields.get(name)]
    if missing:
        raise CliError(f"the connection string lacks {', '.join(missing)}")
    return PolicyCredential(
        fields["HostName"], fields["SharedAccessKeyName"], fields["SharedAccessKey"]
    )


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """The connection options every command takes (see module docstring)."""

    connection_string: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    instance: str | None = None
    endpoint: str | None = None
    ca_certificate: Path | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        text = url if "://" in url else "https://" + url
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise CliError(f"{url!r} is not an endpoint URL") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise CliError(f"{url!r} is not an https:// endpoint")
        return cls(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: Any  # decoded JSON, or None


class Client:
    """Admin and service API calls for one CLI command."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        ssl_context: ssl.SSLContext | None,
        admin_key: str | None,
        policy: PolicyCredential | None,
        instance: str | None,
        default_id_scope: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = endpoint
        self._ssl_context = ssl_context
        self._admin_key = admin_key
        self._policy = policy
        self._instance = instance
        self._default_id_scope = default_id_scope
        self._clock = clock
        self._service_policy: PolicyCredential | None = None if instance else policy

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    # -- admin API ---------------------------------------------------------------------------

    def admin(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        if_match: str | None = None,
    ) -> Any:
        """Call `/admin/v1{path}`; the decoded JSON answer (None for 204)."""
        headers = {"Authorization": self._admin_authorization()}
        if if_match:
            headers["If-Match"] = if_match
        if self._policy is not None and self._admin_key is None:
            headers["Host"] = self._policy.host
        payload = json.dumps(body).encode() if body is not None else None
        return self._send(method, ADMIN_BASE_PATH + path, query, headers, payload).body

    def admin_stream(self, path: str, chunks: Iterable[bytes], content_type: str) -> Any:
        """POST a body of any size, sent chunked as `chunks` are produced."""
        headers = {"Authorization": self._admin_authorization(), "Content-Type": content_type}
        if self._policy is not None and self._admin_key is None:
            headers["Host"] = self._policy.host
        return self._send("POST", ADMIN_BASE_PATH + path, None, headers, chunks).body

    def _admin_authorization(self) -> str:
        if self._admin_key is not None:
            return f"Bearer {self._admin_key}"
        if self._policy is not None:
            return self._policy.token(self._clock())
        raise CliError(
            "no credentials: give --connection-string or run next to a server's data dir"
        )

    def instance_path(self) -> str:
        """`/instances/{name}` of the instance the command addresses."""
        return "/instances/" + quote(self.instance_name(), safe="")

    def instance_name(self) -> str:
        if self._instance is not None:
            return self._instance
        listed = self.admin("GET", "/instances")["value"]
        if self._admin_key is None:
            # A policy sees exactly its own instance.
            if len(listed) != 1:
                raise CliError("the connection string's policy does not name one instance")
            self._instance = str(listed[0]["name"])
            return self._instance
        default = [i for i in listed if i["idScope"] == self._default_id_scope]
        if not default:
            raise CliError("the server's default instance is gone; pick one with --instance")
        self._instance = str(default[0]["name"])
        return self._instance

    # -- service API -------------------------------------------------------------------------

    def service(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Call the DPS service API (`?api-version=2021-10-01`) signed with a service token."""
        policy = self._service_credential()
        all_headers = {"Authorization": policy.token(self._clock()), "Host": policy.host}
        all_headers.update(headers or {})
        payload = json.dumps(body).encode() if body is not None else None
        return self._send(method, path, {"api-version": SERVICE_API_VERSION}, all_headers, payload)

    def _service_credential(self) -> PolicyCredential:
        if self._service_policy is not None:
            return self._service_policy
        if self._instance is None:
            raise CliError("no service connection string: give --connection-string or --instance")
        # Another instance than the default: sign with its owner policy, fetched as admin.
        instance = self.admin("GET", self.instance_path())
        try:
            owner = self.admin("GET", self.instance_path() + "/policies/" + OWNER_POLICY_NAME)
        except ApiError as err:
            raise CliError(
                f"instance {self._instance!r} has no {OWNER_POLICY_NAME} policy to sign with; "
                "use --connection-string with another policy"
            ) from err
        self._service_policy = PolicyCredential(
            instance["serviceHostName"], owner["name"], owner["primaryKey"]
        )
        return self._service_policy

    # -- HTTP ---------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        headers: dict[str, str],
        body: bytes | Iterable[bytes] | None,
    ) -> Response:
        url = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", **headers}
        if isinstance(body, bytes):
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        connection = self._connection()
        try:
            connection.request(
                method,
                url,
                body=body,
                headers=headers,
                encode_chunked=body is not None and not isinstance(body, bytes),
            )
            answer = connection.getresponse()
            raw = answer.read()
            response_headers = {name.lower(): value for name, value in answer.getheaders()}
        except ssl.SSLError as err:
            raise CliError(
                f"TLS with {self._endpoint.host} failed: {err.reason}; is the CA trusted?"
            ) from None
        except OSError as err:
            where = f"{self._endpoint.scheme}://{self._endpoint.host}:{self._endpoint.port}"
            raise CliError(f"cannot reach the server at {where}: {err}") from None
        finally:
            connection.close()
        return _decode(answer.status, response_headers, raw)

    def _connection(self) -> http.client.HTTPConnection:
        if self._endpoint.scheme == "http":
            return http.client.HTTPConnection(
                self._endpoint.host, self._endpoint.port, timeout=HTTP_TIMEOUT_SECONDS
            )
        return http.client.HTTPSConnection(
            self._endpoint.host,
            self._endpoint.port,
            context=self._ssl_context or ssl.create_default_context(),
            timeout=HTTP_TIMEOUT_SECONDS,
        )


def _decode(status: int, headers: dict[str, str], raw: bytes) -> Response:
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
    if status >= 400:
        details = body if isinstance(body, dict) else {}
        code = details.get("errorCode")
        message = str(details.get("message") or f"HTTP {status}")
        raise ApiError(status, code if isinstance(code, int) else None, message)
    if raw and body is None:
        raise CliError(f"the server answered HTTP {status} with a body that is not JSON")
    return Response(status, headers, body)


def open_client(options: ConnectionOptions) -> Client:
    """Resolve the options into a Client (reads state.json and the admin key when needed)."""
    policy = (
        parse_connection_string(options.connection_string) if options.connection_string else None
    )
    if policy is not None and options.instance is not None:
        raise CliError(
            "--instance cannot be combined with a connection string, which names its instance"
        )
    state = _read_state_if_needed(options, policy)
    endpoint_url = options.endpoint or (
        "https://" + policy.host
        if policy is not None
        else state.status.endpoints.https
        if state
        else None
    )
    if endpoint_url is None:
        raise CliError("no endpoint: give --endpoint")
    ca_file = options.ca_certificate or (state.status.ca_certificate if state else None)
    admin_key = None
    if policy is None and state is not None:
        admin_key = _read_admin_key(state.admin_key_file)
        service = state.status.service_connection_string
        policy = parse_connection_string(service) if service else None
    return Client(
        Endpoint.parse(endpoint_url),
        ssl_context=_ssl_context(ca_file),
        admin_key=admin_key,
        policy=policy,
        instance=options.instance,
        default_id_scope=state.status.id_scope if state else None,
    )


def _read_state_if_needed(
    options: ConnectionOptions, policy: PolicyCredential | None
) -> ServerState | None:
    try:
        return read_state(options.data_dir)
    except StatusError as err:
        if policy is None:
            raise CliError(f"{err} (or give --connection-string)") from None
        return None  # the connection string says everything; the data dir was a convenience


def _read_admin_key(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError as err:
        raise CliError(f"cannot read the admin key {path}: {err.strerror}") from None


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.2+ only (ARCHITECTURE §6)
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as err:
            raise CliError(f"cannot load the CA certificate {ca_file}: {err}") from None
    return context


def request_body(model: type[WireModel], **fields: Any) -> dict[str, Any]:
    """An admin API body built and checked with the server's own schema (fields left None are
    not sent); raises CliError naming what is wrong."""
    # Validated under the wire names, so that a problem is reported as the server would.
    given = {to_camel(name): value for name, value in fields.items() if value is not None}
    try:
        checked = model.model_validate(given)
    except ValidationError as err:
        raise CliError(describe_validation_error(err)) from None
    body: dict[str, Any] = checked.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return body
