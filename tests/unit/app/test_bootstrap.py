from __future__ import annotations

import asyncio
import base64
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from opendps.app.bootstrap import (
    BUILTIN_HUB_HOST_NAME,
    DEFAULT_INSTANCE_NAME,
    ensure_default_instance,
    prepare_data_dir,
)
from opendps.app.devpki import PkiError
from opendps.engine.ports import RandomIdGenerator, SystemClock
from opendps.model.hub import HubKind
from opendps.model.instance import ALL_RIGHTS, OWNER_POLICY_NAME
from opendps.store.interface import Store
from opendps.store.sqlite import open_sqlite_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_sqlite_store(tmp_path / "opendps.db")
    yield opened
    await opened.close()


def test_data_dir_is_owner_only_and_holds_a_base64_admin_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    prepared = prepare_data_dir(data_dir, ("localhost",), SystemClock())
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(prepared.admin_key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(prepared.admin_key)) == 32
    assert prepared.pki.ca_certificate == data_dir / "ca.pem"


def test_data_dir_preparation_reuses_the_admin_key_and_ca(tmp_path: Path) -> None:
    first = prepare_data_dir(tmp_path, ("localhost",), SystemClock())
    ca = first.pki.ca_certificate.read_bytes()
    second = prepare_data_dir(tmp_path, ("localhost",), SystemClock())
    assert second.admin_key == first.admin_key
    assert second.pki.ca_certificate.read_bytes() == ca


def test_a_corrupt_admin_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "admin.key").write_text("not base64 !!\n")
    with pytest.raises(PkiError, match="admin.key"):
        prepare_data_dir(tmp_path, ("localhost",), SystemClock())


async def test_first_run_creates_default_instance_owner_policy_and_builtin_hub(
    store: Store,
) -> None:
    result = await ensure_default_instance(
        store, SystemClock(), RandomIdGenerator(), service_host="dps.example.com"
    )
    assert result.created
    instance = result.instance
    assert instance.name == DEFAULT_INSTANCE_NAME
    assert instance.service_host_name == "dps.example.com"
    assert await store.get_instance_by_id_scope(instance.id_scope) == instance
    assert result.owner_policy is not None
    assert result.owner_policy.name == OWNER_POLICY_NAME
    assert result.owner_policy.rights == ALL_RIGHTS
    [hub] = await store.list_linked_hubs(instance.id)
    assert (hub.kind, hub.host_name) == (HubKind.BUILTIN, BUILTIN_HUB_HOST_NAME)


async def test_second_run_reuses_the_instance_and_its_keys(store: Store) -> None:
    first = await ensure_default_instance(
        store, SystemClock(), RandomIdGenerator(), service_host="localhost"
    )
    second = await ensure_default_instance(
        store, SystemClock(), RandomIdGenerator(), service_host="other"
    )
    assert not second.created
    assert second.instance == first.instance
    assert second.owner_policy == first.owner_policy
    assert len(await store.list_instances()) == 1


async def test_nodes_starting_together_end_with_one_default_instance(store: Store) -> None:
    results = await asyncio.gather(
        *(
            ensure_default_instance(
                store, SystemClock(), RandomIdGenerator(), service_host="localhost"
            )
            for _ in range(3)
        )
    )
    assert len({result.instance.id_scope for result in results}) == 1
    assert sum(result.created for result in results) == 1
    assert len(await store.list_instances()) == 1


async def test_a_deleted_owner_policy_is_not_recreated_behind_the_operator(store: Store) -> None:
    first = await ensure_default_instance(
        store, SystemClock(), RandomIdGenerator(), service_host="localhost"
    )
    assert await store.delete_access_policy(first.instance.id, OWNER_POLICY_NAME)
    again = await ensure_default_instance(
        store, SystemClock(), RandomIdGenerator(), service_host="localhost"
    )
    assert again.owner_policy is None
    assert await store.get_access_policy(first.instance.id, OWNER_POLICY_NAME) is None
