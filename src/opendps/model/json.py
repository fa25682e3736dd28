"""Type aliases for JSON values carried verbatim (twins, device payloads, custom data)."""

from __future__ import annotations

from typing import Any, TypeAlias

# Twin collections and device payloads are opaque to OpenDPS: stored and returned as sent.
JsonObject: TypeAlias = dict[str, Any]
JsonValue: TypeAlias = Any
