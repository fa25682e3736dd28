"""First start and every start after it: the data dir, its secrets, the default instance.

Data dir layout (other parts rely on these names):
- `opendps.db`  the SQLite database (default store);
- `ca.pem`, `ca.key`  the dev CA (key 0600); `server.pem` (server certificate + CA),
  `server.key` (0600): see devpki.py;
- `admin.key`  the deployment admin key, base64 (0600); the admin API accepts
  `Authorization: Bearer <key>`;
- `state.json`  written by a running server (see status.py).

Everything is created when missing and reused when present, so a second start keeps the same
ID scope, keys and CA.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from opendps.admin_api.hubs import builtin_hub_host_name
from opendps.admin_api.instances import create_instance_records
from opendps.app.devpki import DevPki, PkiError, ensure_dev_pki, server_hosts, write_secret_text
from opendps.engine.ports import Clock, IdGenerator
from opendps.model.errors import ALREADY_EXISTS, DpsError
from opendps.model.hub import AllocationPolicy
from opendps.model.instance import OWNER_POLICY_NAME, AccessPolicy, Instance
from opendps.observability.logging import log_event
from opendps.store.interface import Store

ADMIN_KEY_FILE = "admin.key"
DEFAULT_INSTANCE_NAME = "default"
# Named like the built-in hub of any instance the admin API creates: `default.builtin-hub.localhost`.
BUILTIN_HUB_HOST_NAME = builtin_hub_host_name(DEFAULT_INSTANCE_NAME)
# 32 random bytes, like the keys of Azure's shared access policies.
ADMIN_KEY_BYTES = 32
# The data dir holds private keys: owner-only.
DATA_DIR_MODE = 0o700

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DataDir:
    """The files prepared before the store opens."""

    path: Path
    pki: DevPki
    admin_key: str
    admin_key_file: Path


@dataclass(frozen=True, slots=True)
class DefaultInstance:
    instance: Instance
    # None when an operator deleted the owner policy (it is not recreated behind their back).
    owner_policy: AccessPolicy | None
    created: bool


def prepare_data_dir(data_dir: Path, public_hosts: tuple[str, ...], clock: Clock) -> DataDir:
    """Create or reuse the data dir, the dev PKI and the admin key.

    Raises PkiError (or OSError) when the directory or its files cannot be used.
    """
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    pki = ensure_dev_pki(data_dir, server_hosts(public_hosts), clock)
    key_file = data_dir / ADMIN_KEY_FILE
    return DataDir(data_dir, pki, _ensure_admin_key(key_file), key_file)


def _ensure_admin_key(path: Path) -> str:
    if path.exists():
        key = path.read_text(encoding="ascii").strip()
        try:
            base64.b64decode(key, validate=True)
        except ValueError:
            raise PkiError(
                f"{path} does not hold a base64 key; remove it to create a new one"
            ) from None
        if key:
            return key
    key = base64.b64encode(secrets.token_bytes(ADMIN_KEY_BYTES)).decode("ascii")
    write_secret_text(path, key)
    log_event(logger, logging.INFO, "bootstrap.admin_key_created", file=str(path))
    return key


async def ensure_default_instance(
    store: Store, clock: Clock, ids: IdGenerator, *, service_host: str
) -> DefaultInstance:
    """Find the default instance, or create it with its owner policy and built-in hub.

    Safe when several nodes start at once on one PostgreSQL database: the loser of the
    creation race reads what the winner stored.
    """
    existing = await store.get_instance_by_name(DEFAULT_INSTANCE_NAME)
    if existing is not None:
        policy = await store.get_access_policy(existing.id, OWNER_POLICY_NAME)
        return DefaultInstance(existing, policy, created=False)
    try:
        created, policy = await create_instance_records(
            store,
            clock,
            ids,
            name=DEFAULT_INSTANCE_NAME,
            host=service_host,
            allocation_policy=AllocationPolicy.HASHED,
        )
    except DpsError as err:
        if err.error_code != ALREADY_EXISTS:
            raise
        return await ensure_default_instance(store, clock, ids, service_host=service_host)
    log_event(
        logger,
        logging.INFO,
        "bootstrap.instance_created",
        instance=created.name,
        id_scope=created.id_scope,
        hub=BUILTIN_HUB_HOST_NAME,
    )
    return DefaultInstance(created, policy, created=True)
