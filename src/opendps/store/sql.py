"""`SqlStore`: every `Store` method, written once in portable SQLAlchemy Core.

Each public method runs exactly one named transaction: it encodes its arguments (codec.py),
then hands a plain synchronous `*_txn(txn, ...)` function to `_read`/`_write`, which run it in
a transaction with that name, as Synapse's `runInteraction(desc, func)` does
(synapse/storage/database.py). `*_txn` functions hold the SQL; they may run more than once (a
deadlock or serialization failure is retried), so they do nothing but database work.

What differs between SQLite and PostgreSQL is asked of the `SqlDialect` (dialect.py) and
nowhere else. The conditional-write rules (if_match, create_only, created_at preservation) and
keyset paging are implemented once, in the generic `*_row(s)_txn` helpers below, with single
statements (`INSERT … ON CONFLICT`, `UPDATE … WHERE etag = …`) so they hold under concurrent
writers on PostgreSQL's READ COMMITTED without explicit row locks.

The module is longer than our usual 300 lines because the `Store` protocol has ~45 methods;
each is a few lines over the shared helpers, and splitting them by domain would scatter the
one pattern they all follow.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from opendps.model.audit import AuditEntry, MeterCount, MeterKind
from opendps.model.certificate import CaCertificate
from opendps.model.device import HubDevice
from opendps.model.enrollment import EnrollmentGroup, IndividualEnrollment
from opendps.model.errors import (
    ALREADY_EXISTS,
    ETAG_MISMATCH,
    INSTANCE_NOT_FOUND,
    DpsError,
)
from opendps.model.hub import LinkedHub
from opendps.model.ids import registration_key
from opendps.model.instance import AccessPolicy, Instance
from opendps.model.registration import Operation, RegistrationState
from opendps.model.tpm import TpmChallenge
from opendps.observability.logging import log_event
from opendps.store import codec, tables
from opendps.store.dialect import SINGLE_READ_OPTION, WRITE_OPTION, SqlDialect
from opendps.store.groupcommit import GroupCommitter
from opendps.store.interface import DeviceRecords, Page, Store

logger = logging.getLogger(__name__)

# A transaction that lost a deadlock or serialization conflict was rolled back by the database
# and is safe to run again; five tries absorb bursts of contention without hiding a livelock.
MAX_TXN_ATTEMPTS = 5
# Linear back-off between those tries (20 ms, 40 ms, …): long enough for the winner to commit.
RETRY_BACKOFF_SECONDS = 0.02
# Bulk import encodes and writes this many rows per executemany. Encoding a chunk holds the
# event loop (~15 µs a row), so 1,000 rows keeps each stall near 15 ms; larger chunks were
# measured no faster (docs/database.md has the import figures).
IMPORT_CHUNK_ROWS = 1000
# Transactions slower than this are logged; at a million rows a missing index shows up here.
SLOW_TXN_SECONDS = 1.0

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
# A batched write and what committing it gives back (store/groupcommit.py).
WriteT = TypeVar("WriteT")
OutcomeT = TypeVar("OutcomeT")
Row = sa.Row[Any]


@dataclass(frozen=True, slots=True)
class Txn:
    """What a `*_txn` function gets: the connection inside an open transaction, and the dialect."""

    conn: Connection
    dialect: SqlDialect

    def execute(
        self,
        stmt: sa.Executable,
        params: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    ) -> sa.CursorResult[Any]:
        return self.conn.execute(stmt, params)


@dataclass(frozen=True, slots=True)
class Keyed:
    """A table whose rows are addressed by owner columns plus one case-folded key column."""

    table: sa.Table
    owner: tuple[str, ...]
    key: str
    what: str  # for messages, mid-sentence: "individual enrollment"

    @property
    def key_columns(self) -> list[str]:
        return [*self.owner, self.key]

    def where(self, owner: Sequence[str], key: str) -> list[sa.ColumnElement[bool]]:
        values = [*owner, registration_key(key)]
        return [
            self.table.c[name] == value
            for name, value in zip(self.key_columns, values, strict=True)
        ]

    def label(self, key: str) -> str:
        return f"{self.what} {key!r}"


INSTANCES = tables.instances
POLICIES = Keyed(tables.access_policies, ("instance_id",), "name_key", "access policy")
HUBS = Keyed(tables.linked_hubs, ("instance_id",), "host_key", "linked hub")
ENROLLMENTS = Keyed(
    tables.individual_enrollments, ("instance_id",), "registration_key", "individual enrollment"
)
GROUPS = Keyed(tables.enrollment_groups, ("instance_id",), "group_key", "enrollment group")
REGISTRATIONS = Keyed(
    tables.registration_states, ("instance_id",), "registration_key", "registration"
)
# Operation IDs are generated by us and matched exactly: never look them up through `where`.
OPERATIONS = Keyed(tables.operations, ("instance_id",), "operation_id", "operation")
TPM_CHALLENGES = Keyed(tables.tpm_challenges, ("instance_id",), "registration_key", "TPM challenge")
CERTIFICATES = Keyed(tables.ca_certificates, ("instance_id",), "name_key", "CA certificate")
DEVICES = Keyed(tables.hub_devices, ("hub_key",), "device_key", "hub device")


# -- generic transactions over a keyed table -----------------------------------------------------
def _capitalised(label: str) -> str:
    return label[:1].upper() + label[1:]


def _key_of(kind: Keyed, row: Mapping[str, Any]) -> list[sa.ColumnElement[bool]]:
    return [kind.table.c[name] == row[name] for name in kind.key_columns]


def _precondition_failed(
    txn: Txn, kind: Keyed, where: list[sa.ColumnElement[bool]], label: str
) -> DpsError:
    exists = txn.execute(sa.select(sa.literal(1)).select_from(kind.table).where(*where)).first()
    if exists is None:
        return DpsError(ETAG_MISMATCH, f"Precondition failed: {label} does not exist.")
    return DpsError(ETAG_MISMATCH, f"Precondition failed: the etag of {label} does not match.")


def put_row_txn(
    txn: Txn,
    kind: Keyed,
    row: dict[str, Any],
    *,
    if_match: str | None,
    create_only: bool,
    label: str,
) -> Row:
    """Write `row` under the if_match / create_only rules of store/interface.py.

    Returns the row as now stored (RETURNING), so `created_at` is the one kept from an
    existing row on replace. Raises DpsError(ALREADY_EXISTS) or DpsError(ETAG_MISMATCH).
    """
    table, keys = kind.table, kind.key_columns
    if create_only:
        if if_match is not None:
            # Both preconditions cannot hold at once; report the one that fails.
            raise _contradiction(txn, kind, row, label)
        stmt = txn.dialect.insert_absent(table, keys=keys).values(row).returning(*table.c)
        inserted = txn.execute(stmt).first()
        if inserted is None:
            raise DpsError(ALREADY_EXISTS, f"{_capitalised(label)} already exists.")
        return inserted
    changed = [name for name in row if name not in keys and name != "created_at"]
    if if_match is None:
        return txn.execute(_upsert_returning(txn.dialect, kind, tuple(changed)), row).one()
    where = _key_of(kind, row)
    if if_match != "*":
        where.append(table.c.etag == if_match)
    update = sa.update(table).where(*where).values({name: row[name] for name in changed})
    updated = txn.execute(update.returning(*table.c)).first()
    if updated is None:
        raise _precondition_failed(txn, kind, _key_of(kind, row), label)
    return updated


def _contradiction(txn: Txn, kind: Keyed, row: Mapping[str, Any], label: str) -> DpsError:
    exists = txn.execute(
        sa.select(sa.literal(1)).select_from(kind.table).where(*_key_of(kind, row))
    ).first()
    if exists is not None:
        return DpsError(ALREADY_EXISTS, f"{_capitalised(label)} already exists.")
    return DpsError(ETAG_MISMATCH, f"Precondition failed: {label} does not exist.")


def get_row_txn(txn: Txn, kind: Keyed, owner: Sequence[str], key: str) -> Row | None:
    values = [*owner, registration_key(key)]
    params = {f"key_{n}": value for n, value in enumerate(values)}
    return txn.execute(_select_by_key(kind), params).first()


# Hot-path statements are built once and executed with parameters. Building a Core statement
# and deriving its cache key cost ~200 Python calls each time; a prebuilt statement memoizes its
# cache key, so a registration's reads and writes skip that work (docs/performance.md).
@functools.cache
def _select_by_key(kind: Keyed) -> sa.Select[Any]:
    where = [
        kind.table.c[name] == sa.bindparam(f"key_{n}") for n, name in enumerate(kind.key_columns)
    ]
    return sa.select(kind.table).where(*where)


# Bounded: one entry per (dialect, table, column set); a process has one dialect, tests many.
@functools.lru_cache(maxsize=64)
def _upsert_returning(dialect: SqlDialect, kind: Keyed, changed: tuple[str, ...]) -> sa.Insert:
    """INSERT … ON CONFLICT DO UPDATE `changed` … RETURNING, values given at execution."""
    table = kind.table
    return dialect.upsert(table, keys=kind.key_columns, update=changed).returning(*table.c)


@functools.lru_cache(maxsize=64)
def _insert_absent_returning(dialect: SqlDialect, kind: Keyed) -> sa.Insert:
    """INSERT … ON CONFLICT DO NOTHING RETURNING, values given at execution (no row: it existed)."""
    table = kind.table
    return dialect.insert_absent(table, keys=kind.key_columns).returning(*table.c)


def delete_row_txn(
    txn: Txn, kind: Keyed, owner: Sequence[str], key: str, *, if_match: str | None
) -> bool:
    """Delete one row; False if absent and unconditional, DpsError(ETAG_MISMATCH) if conditional."""
    where = kind.where(owner, key)
    matching = [*where, kind.table.c.etag == if_match] if if_match not in (None, "*") else where
    deleted = txn.execute(sa.delete(kind.table).where(*matching)).rowcount
    if deleted:
        return True
    if if_match is None:
        return False
    raise _precondition_failed(txn, kind, where, kind.label(key))


def list_rows_txn(txn: Txn, kind: Keyed, owner: Sequence[str]) -> list[Row]:
    where = [kind.table.c[name] == value for name, value in zip(kind.owner, owner, strict=True)]
    return list(
        txn.execute(sa.select(kind.table).where(*where).order_by(kind.table.c[kind.key])).all()
    )


def page_rows_txn(
    txn: Txn, kind: Keyed, where: list[sa.ColumnElement[bool]], *, after: str | None, limit: int
) -> tuple[list[Row], str | None]:
    """One keyset page in key order: rows with key > `after`, and the key to continue after.

    Reads one row more than asked, so the last page says so (next_after None) without a
    further empty page.
    """
    if limit < 1:
        raise ValueError("page limit must be at least 1")
    key = kind.table.c[kind.key]
    query = sa.select(kind.table).where(*where)
    if after is not None:
        query = query.where(key > registration_key(after))
    rows = list(txn.execute(query.order_by(key).limit(limit + 1)).all())
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1]._mapping[kind.key]


# -- instances -----------------------------------------------------------------------------------
def _instance_conflict(
    txn: Txn, row: Mapping[str, Any], *, other_than: str | None
) -> DpsError | None:
    checks = (("id", "ID"), ("name_key", "name"), ("id_scope", "ID scope"))
    for column, said in checks:
        if column == "id" and other_than is not None:
            continue
        query = sa.select(INSTANCES.c.id).where(INSTANCES.c[column] == row[column])
        if other_than is not None:
            query = query.where(INSTANCES.c.id != other_than)
        if txn.execute(query).first() is not None:
            shown = row["name"] if column == "name_key" else row[column]
            return DpsError(ALREADY_EXISTS, f"An instance with {said} {shown!r} already exists.")
    return None


def create_instance_txn(
    txn: Txn, row: dict[str, Any], policies: list[dict[str, Any]], hubs: list[dict[str, Any]]
) -> Row:
    # No conflict target: any of the three unique columns (id, name, ID scope) counts.
    stmt = txn.dialect.insert_absent(INSTANCES, keys=None).values(row).returning(*INSTANCES.c)
    inserted = txn.execute(stmt).first()
    if inserted is None:
        raise _instance_conflict(txn, row, other_than=None) or DpsError(
            ALREADY_EXISTS, f"Instance {row['name']!r} already exists."
        )
    if policies:
        txn.execute(sa.insert(tables.access_policies), policies)
    if hubs:
        txn.execute(sa.insert(tables.linked_hubs), hubs)
    return inserted


def update_instance_txn(txn: Txn, row: dict[str, Any], *, if_match: str | None) -> Row:
    conflict = _instance_conflict(txn, row, other_than=row["id"])
    if conflict is not None:
        raise conflict
    where: list[sa.ColumnElement[bool]] = [INSTANCES.c.id == row["id"]]
    if if_match not in (None, "*"):
        where.append(INSTANCES.c.etag == if_match)
    values = {name: value for name, value in row.items() if name not in ("id", "created_at")}
    updated = txn.execute(
        sa.update(INSTANCES).where(*where).values(values).returning(*INSTANCES.c)
    ).first()
    if updated is not None:
        return updated
    label = f"instance {row['name']!r}"
    exists = txn.execute(sa.select(INSTANCES.c.id).where(INSTANCES.c.id == row["id"])).first()
    if exists is None and if_match is None:
        raise DpsError(INSTANCE_NOT_FOUND, f"Instance {row['id']!r} does not exist.")
    if exists is None:
        raise DpsError(ETAG_MISMATCH, f"Precondition failed: {label} does not exist.")
    raise DpsError(ETAG_MISMATCH, f"Precondition failed: the etag of {label} does not match.")


def get_instance_where_txn(txn: Txn, where: sa.ColumnElement[bool]) -> Row | None:
    # Oldest first: when several instances share a service host name, the first one answers.
    query = (
        sa.select(INSTANCES).where(where).order_by(INSTANCES.c.created_at, INSTANCES.c.id).limit(1)
    )
    return txn.execute(query).first()


def get_where_txn(txn: Txn, table: sa.Table, where: sa.ColumnElement[bool]) -> Row | None:
    return txn.execute(sa.select(table).where(where)).first()


def get_device_records_txn(
    txn: Txn, instance_id: str, registration_id: str, group_id: str | None
) -> tuple[Row | None, Row | None, Row | None]:
    """A device's registration state, individual enrollment and (if named) enrollment group."""
    owner = [instance_id]
    state = get_row_txn(txn, REGISTRATIONS, owner, registration_id)
    individual = get_row_txn(txn, ENROLLMENTS, owner, registration_id)
    group = None if group_id is None else get_row_txn(txn, GROUPS, owner, group_id)
    return state, individual, group


# Read transactions that run exactly one SELECT: the dialect may skip BEGIN for them
# (SINGLE_READ_OPTION). A read that runs several statements must not be listed here.
_SINGLE_STATEMENT_READS: frozenset[Callable[..., Any]] = frozenset(
    {get_row_txn, get_where_txn, get_instance_where_txn}
)


def list_instances_txn(txn: Txn) -> list[Row]:
    return list(txn.execute(sa.select(INSTANCES).order_by(INSTANCES.c.name_key)).all())


def delete_instance_txn(txn: Txn, instance_id: str) -> bool:
    # Every owned row goes with it through ON DELETE CASCADE (tables.py).
    return bool(txn.execute(sa.delete(INSTANCES).where(INSTANCES.c.id == instance_id)).rowcount)


# -- other table-specific transactions --------------------------------------------------------------
def upsert_row_txn(txn: Txn, kind: Keyed, row: dict[str, Any]) -> Row:
    return put_row_txn(txn, kind, row, if_match=None, create_only=False, label=kind.what)


def import_rows_txn(
    txn: Txn,
    kind: Keyed,
    records: Sequence[T],
    positions: Sequence[int],
    encode: Callable[[T], dict[str, Any]],
) -> None:
    """Upsert `records[i]` for each i in `positions`, encoding one chunk at a time.

    Encoding per chunk keeps peak memory near the input's own size (a million encoded rows
    would double it) and yields to the event loop between chunks while the driver writes.
    """
    upsert = _bulk_upsert(txn.conn.dialect, txn.dialect, kind)
    for start in range(0, len(positions), IMPORT_CHUNK_ROWS):
        chunk = positions[start : start + IMPORT_CHUNK_ROWS]
        rows = [upsert.driver_params(encode(records[position])) for position in chunk]
        txn.conn.exec_driver_sql(upsert.sql, rows)


@dataclass(frozen=True, slots=True)
class _BulkUpsert:
    """A table's import upsert compiled once for one database driver, run with driver values.

    SQLAlchemy's executemany builds a parameter dict per row and looks up each value's bind
    processor on the way: a third of a million-row import's CPU. The same conversions, by the
    same processors (JSON serialisation, SQLite's datetime text), done here in one pass per
    row give the driver exactly what SQLAlchemy would have given it.
    """

    sql: str
    names: tuple[str, ...]  # bind parameters in the order the driver takes them
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    def driver_params(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = [
            row[name] if process is None else process(row[name])
            for name, process in zip(self.names, self.processors, strict=True)
        ]
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


@functools.lru_cache(maxsize=16)
def _bulk_upsert(driver: sa.engine.Dialect, dialect: SqlDialect, kind: Keyed) -> _BulkUpsert:
    keys = kind.key_columns
    changed = [
        column.name
        for column in kind.table.c
        if column.name not in keys and column.name != "created_at"
    ]
    compiled = dialect.upsert(kind.table, keys=keys, update=changed).compile(dialect=driver)
    names = tuple(compiled.positiontup or compiled.binds)
    if set(names) != {column.name for column in kind.table.c}:
        raise AssertionError(f"the import upsert of {kind.table.name} binds {names}")
    processors = tuple(
        compiled.binds[name].type.dialect_impl(driver).bind_processor(driver) for name in names
    )
    return _BulkUpsert(compiled.string, names, processors, bool(compiled.positional))


def count_rows_txn(txn: Txn, table: sa.Table, instance_id: str) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(table.c.instance_id == instance_id)
    return int(txn.execute(query).scalar_one())


def delete_operations_before_txn(txn: Txn, before: datetime, limit: int) -> int:
    table = tables.operations
    oldest = (
        sa.select(table.c.instance_id, table.c.operation_id)
        .where(table.c.updated_at < before)
        .order_by(table.c.updated_at)
        .limit(limit)
    )
    key = sa.tuple_(table.c.instance_id, table.c.operation_id)
    return int(txn.execute(sa.delete(table).where(key.in_(oldest))).rowcount)


def put_tpm_challenge_txn(txn: Txn, row: dict[str, Any]) -> None:
    table = tables.tpm_challenges
    keys = ["instance_id", "registration_key"]
    changed = [name for name in row if name not in keys]
    txn.execute(txn.dialect.upsert(table, keys=keys, update=changed), [row])


def use_tpm_challenge_txn(
    txn: Txn,
    instance_id: str,
    registration_id: str,
    challenge_id: str,
    used_at: datetime,
    hub_key: str,
) -> bool:
    # One conditional UPDATE: of two registrations racing on one challenge, exactly one wins.
    table = tables.tpm_challenges
    used = txn.execute(
        sa.update(table)
        .where(
            table.c.instance_id == instance_id,
            table.c.registration_key == registration_key(registration_id),
            table.c.challenge_id == challenge_id,
            table.c.used_at.is_(None),
        )
        .values(used_at=used_at, hub_key=hub_key)
    )
    return bool(used.rowcount)


def delete_tpm_challenges_expired_txn(txn: Txn, before: datetime, limit: int) -> int:
    table = tables.tpm_challenges
    oldest = (
        sa.select(table.c.instance_id, table.c.registration_key)
        .where(table.c.expires_at < before)
        .order_by(table.c.expires_at)
        .limit(limit)
    )
    key = sa.tuple_(table.c.instance_id, table.c.registration_key)
    return int(txn.execute(sa.delete(table).where(key.in_(oldest))).rowcount)


def list_access_policies_named_txn(txn: Txn, name: str) -> list[Row]:
    table = tables.access_policies
    query = (
        sa.select(table)
        .where(table.c.name_key == registration_key(name))
        .order_by(table.c.instance_id)
    )
    return list(txn.execute(query).all())


def append_audit_txn(txn: Txn, row: dict[str, Any]) -> None:
    txn.execute(sa.insert(tables.audit_log).values(row))


def list_audit_txn(
    txn: Txn, instance_id: str | None, before_id: int | None, limit: int
) -> list[Row]:
    table = tables.audit_log
    query = sa.select(table)
    if instance_id is not None:
        query = query.where(table.c.instance_id == instance_id)
    if before_id is not None:
        query = query.where(table.c.id < before_id)
    return list(txn.execute(query.order_by(table.c.id.desc()).limit(limit)).all())


def add_meter_txn(txn: Txn, row: dict[str, Any]) -> None:
    txn.execute(_meter_increment(txn.dialect), row)


# Every registration batch adds to a meter: built once (see _select_by_key), values at execution.
@functools.lru_cache(maxsize=8)
def _meter_increment(dialect: SqlDialect) -> sa.Insert:
    keys = ["instance_id", "day", "kind"]
    return dialect.increment(tables.meters, keys=keys, column="count")


@dataclass(frozen=True, slots=True)
class RegistrationRecord:
    """The encoded writes of one concluded registration (SqlStore.record_registration)."""

    state: dict[str, Any]
    operation: dict[str, Any]
    meter: dict[str, Any]


def record_registrations_txn(txn: Txn, records: Sequence[RegistrationRecord]) -> list[Row]:
    """Write every record's state, operation and meter count; the stored states, in order.

    Rows are written in key order, so that batches of two processes on PostgreSQL lock shared
    rows (a meter, a re-registering device) in the same order instead of deadlocking; the sort
    is stable, so records of one registration ID keep their arrival order and the last one wins
    as it would have with one transaction each. Meter counts of one key are summed first.
    """
    by_key = sorted(
        range(len(records)),
        key=lambda n: (records[n].state["instance_id"], records[n].state["registration_key"]),
    )
    stored: dict[int, Row] = {}
    for position in by_key:
        stored[position] = upsert_row_txn(txn, REGISTRATIONS, records[position].state)
    for position in by_key:
        upsert_row_txn(txn, OPERATIONS, records[position].operation)
    counts: dict[tuple[str, date, str], int] = {}
    for record in records:
        meter = record.meter
        key = (meter["instance_id"], meter["day"], meter["kind"])
        counts[key] = counts.get(key, 0) + meter["count"]
    for (instance_id, day, kind), count in sorted(counts.items()):
        add_meter_txn(txn, {"instance_id": instance_id, "day": day, "kind": kind, "count": count})
    return [stored[position] for position in range(len(records))]


@dataclass(frozen=True, slots=True)
class HubDeviceWrite:
    """One write of SqlStore's hub device batches: an upsert, or an insert unless it exists."""

    row: dict[str, Any]
    create_only: bool


def put_hub_devices_txn(txn: Txn, writes: Sequence[HubDeviceWrite]) -> list[Row | None]:
    """Every write in one transaction; the stored rows, in order (None: a create_only write
    whose device existed). Written in key order (stable, so the last write of one device
    wins), like record_registrations_txn, for the same reason."""
    by_key = sorted(
        range(len(writes)), key=lambda n: (writes[n].row["hub_key"], writes[n].row["device_key"])
    )
    stored: dict[int, Row | None] = {}
    for position in by_key:
        write = writes[position]
        if write.create_only:
            insert = _insert_absent_returning(txn.dialect, DEVICES)
            stored[position] = txn.execute(insert, write.row).first()
        else:
            stored[position] = upsert_row_txn(txn, DEVICES, write.row)
    return [stored[position] for position in range(len(writes))]


def list_meters_txn(txn: Txn, instance_id: str, since: date | None) -> list[Row]:
    table = tables.meters
    query = sa.select(table).where(table.c.instance_id == instance_id)
    if since is not None:
        query = query.where(table.c.day >= since)
    return list(txn.execute(query.order_by(table.c.day, table.c.kind)).all())


def _page(rows: list[Row], next_after: str | None, decode: Callable[[Row], T]) -> Page[T]:
    return Page(items=[decode(row) for row in rows], next_after=next_after)


def _maybe(row: Row | None, decode: Callable[[Row], T]) -> T | None:
    return None if row is None else decode(row)


class SqlStore:
    """The `Store` (store/interface.py) over SQLAlchemy Core; see open_sqlite_store / open_postgres_store.

    One instance per process, shared by every task: it holds only the engine (a connection
    pool) and the dialect, no per-request state.
    """

    def __init__(self, engine: AsyncEngine, dialect: SqlDialect) -> None:
        self._engine = engine
        self._dialect = dialect
        self._registrations = GroupCommitter(self._commit_registrations)
        # Built-in hub devices are written once per first registration, just before its
        # record_registration: batched the same way, concurrent registrations share one
        # transaction (and one fsync) for them instead of queueing one by one for the write slot.
        self._hub_devices = GroupCommitter(self._commit_hub_devices)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def dialect(self) -> SqlDialect:
        return self._dialect

    @property
    def registration_batches(self) -> int:
        """Batches record_registration has committed so far: one transaction each, fewer than
        calls under load (a batch with a deleted instance settles its records one by one)."""
        return self._registrations.batches

    async def close(self) -> None:
        # Writes of registrations whose callers were cancelled (a drain) still commit first.
        await self._registrations.wait_idle()
        await self._hub_devices.wait_idle()
        await self._dialect.close()
        await self._engine.dispose()

    # -- running transactions --------------------------------------------------------------------
    async def _read(
        self, desc: str, func: Callable[Concatenate[Txn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        single = func in _SINGLE_STATEMENT_READS
        return await self._interact(
            desc, False, lambda txn: func(txn, *args, **kwargs), single_read=single
        )

    async def _write(
        self, desc: str, func: Callable[Concatenate[Txn, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        return await self._interact(desc, True, lambda txn: func(txn, *args, **kwargs))

    async def _owned_write(
        self,
        desc: str,
        instance_ids: Sequence[str],
        func: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """A write of rows owned by `instance_ids`: a missing instance becomes a DPS 404."""
        try:
            return await self._interact(desc, True, lambda txn: func(txn, *args, **kwargs))
        except sa.exc.IntegrityError as error:
            if not self._dialect.is_foreign_key_violation(error):
                raise
            names = ", ".join(repr(instance_id) for instance_id in instance_ids)
            what = "Instance" if len(instance_ids) == 1 else "One of the instances"
            raise DpsError(INSTANCE_NOT_FOUND, f"{what} {names} does not exist.") from None

    async def _interact(
        self, desc: str, write: bool, call: Callable[[Txn], R], *, single_read: bool = False
    ) -> R:
        """Run `call` in one transaction named `desc`, retrying it on deadlock or serialization failure.

        Write transactions first take the dialect's write slot (SQLite: one writer at a time).
        Anything `call` raises rolls the transaction back and propagates unchanged (other errors
        are logged once, where they are translated for the caller, not here).
        """
        for attempt in range(1, MAX_TXN_ATTEMPTS + 1):
            try:
                slot = self._dialect.write_slot() if write else contextlib.nullcontext()
                async with slot:
                    return await self._once(desc, write, call, single_read=single_read)
            except sa.exc.DBAPIError as error:
                if not self._dialect.is_retryable(error):
                    raise
                if attempt == MAX_TXN_ATTEMPTS:
                    log_event(
                        logger, logging.WARNING, "store.txn.gave_up", txn=desc, attempts=attempt
                    )
                    raise
                log_event(logger, logging.INFO, "store.txn.retry", txn=desc, attempt=attempt)
                await asyncio.sleep(RETRY_BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(
        self, desc: str, write: bool, call: Callable[[Txn], R], *, single_read: bool = False
    ) -> R:
        started = time.monotonic()
        result = await self._dialect.run_transaction(
            self._engine,
            {WRITE_OPTION: write, SINGLE_READ_OPTION: single_read},
            lambda sync_conn: call(Txn(sync_conn, self._dialect)),
        )
        elapsed = time.monotonic() - started
        if elapsed > SLOW_TXN_SECONDS:
            log_event(
                logger, logging.WARNING, "store.txn.slow", txn=desc, seconds=round(elapsed, 3)
            )
        return result

    # -- instances -------------------------------------------------------------------------------
    async def create_instance(
        self, instance: Instance, policies: list[AccessPolicy], hubs: list[LinkedHub]
    ) -> Instance:
        owners = {policy.instance_id for policy in policies} | {hub.instance_id for hub in hubs}
        if owners - {instance.id}:
            raise ValueError("policies and hubs must belong to the instance being created")
        row = codec.instance_to_row(instance)
        policy_rows = [codec.access_policy_to_row(policy) for policy in policies]
        hub_rows = [codec.linked_hub_to_row(hub) for hub in hubs]
        stored = await self._write(
            "create_instance", create_instance_txn, row, policy_rows, hub_rows
        )
        return codec.row_to_instance(stored)

    async def get_instance(self, instance_id: str) -> Instance | None:
        row = await self._read(
            "get_instance", get_instance_where_txn, INSTANCES.c.id == instance_id
        )
        return _maybe(row, codec.row_to_instance)

    async def get_instance_by_name(self, name: str) -> Instance | None:
        where = INSTANCES.c.name_key == registration_key(name)
        return _maybe(
            await self._read("get_instance_by_name", get_instance_where_txn, where),
            codec.row_to_instance,
        )

    async def get_instance_by_id_scope(self, id_scope: str) -> Instance | None:
        where = INSTANCES.c.id_scope == id_scope
        return _maybe(
            await self._read("get_instance_by_id_scope", get_instance_where_txn, where),
            codec.row_to_instance,
        )

    async def get_instance_by_service_host(self, host_name: str) -> Instance | None:
        where = INSTANCES.c.service_host_key == registration_key(host_name)
        row = await self._read("get_instance_by_service_host", get_instance_where_txn, where)
        return _maybe(row, codec.row_to_instance)

    async def list_instances(self) -> list[Instance]:
        return [
            codec.row_to_instance(row)
            for row in await self._read("list_instances", list_instances_txn)
        ]

    async def update_instance(self, instance: Instance, *, if_match: str | None) -> Instance:
        row = codec.instance_to_row(instance)
        stored = await self._write("update_instance", update_instance_txn, row, if_match=if_match)
        return codec.row_to_instance(stored)

    async def delete_instance(self, instance_id: str) -> bool:
        return await self._write("delete_instance", delete_instance_txn, instance_id)

    # -- access policies -------------------------------------------------------------------------
    async def put_access_policy(self, policy: AccessPolicy) -> AccessPolicy:
        row = codec.access_policy_to_row(policy)
        stored = await self._owned_write(
            "put_access_policy", [policy.instance_id], upsert_row_txn, POLICIES, row
        )
        return codec.row_to_access_policy(stored)

    async def get_access_policy(self, instance_id: str, name: str) -> AccessPolicy | None:
        row = await self._read("get_access_policy", get_row_txn, POLICIES, [instance_id], name)
        return _maybe(row, codec.row_to_access_policy)

    async def list_access_policies(self, instance_id: str) -> list[AccessPolicy]:
        rows = await self._read("list_access_policies", list_rows_txn, POLICIES, [instance_id])
        return [codec.row_to_access_policy(row) for row in rows]

    async def list_access_policies_named(self, name: str) -> list[AccessPolicy]:
        rows = await self._read("list_access_policies_named", list_access_policies_named_txn, name)
        return [codec.row_to_access_policy(row) for row in rows]

    async def delete_access_policy(self, instance_id: str, name: str) -> bool:
        return await self._write(
            "delete_access_policy", delete_row_txn, POLICIES, [instance_id], name, if_match=None
        )

    # -- linked hubs -----------------------------------------------------------------------------
    async def put_linked_hub(self, hub: LinkedHub, *, if_match: str | None = None) -> LinkedHub:
        row = codec.linked_hub_to_row(hub)
        label = HUBS.label(hub.host_name)
        stored = await self._owned_write(
            "put_linked_hub",
            [hub.instance_id],
            put_row_txn,
            HUBS,
            row,
            if_match=if_match,
            create_only=False,
            label=label,
        )
        return codec.row_to_linked_hub(stored)

    async def get_linked_hub(self, instance_id: str, host_name: str) -> LinkedHub | None:
        row = await self._read("get_linked_hub", get_row_txn, HUBS, [instance_id], host_name)
        return _maybe(row, codec.row_to_linked_hub)

    async def list_linked_hubs(self, instance_id: str) -> list[LinkedHub]:
        rows = await self._read("list_linked_hubs", list_rows_txn, HUBS, [instance_id])
        return [codec.row_to_linked_hub(row) for row in rows]

    async def delete_linked_hub(self, instance_id: str, host_name: str) -> bool:
        return await self._write(
            "delete_linked_hub", delete_row_txn, HUBS, [instance_id], host_name, if_match=None
        )

    # -- individual enrollments ------------------------------------------------------------------
    async def put_individual_enrollment(
        self, enrollment: IndividualEnrollment, *, if_match: str | None, create_only: bool = False
    ) -> IndividualEnrollment:
        row = codec.individual_enrollment_to_row(enrollment)
        label = ENROLLMENTS.label(enrollment.registration_id)
        stored = await self._owned_write(
            "put_individual_enrollment",
            [enrollment.instance_id],
            put_row_txn,
            ENROLLMENTS,
            row,
            if_match=if_match,
            create_only=create_only,
            label=label,
        )
        return codec.row_to_individual_enrollment(stored)

    async def get_individual_enrollment(
        self, instance_id: str, registration_id: str
    ) -> IndividualEnrollment | None:
        row = await self._read(
            "get_individual_enrollment", get_row_txn, ENROLLMENTS, [instance_id], registration_id
        )
        return _maybe(row, codec.row_to_individual_enrollment)

    async def delete_individual_enrollment(
        self, instance_id: str, registration_id: str, *, if_match: str | None
    ) -> bool:
        return await self._write(
            "delete_individual_enrollment",
            delete_row_txn,
            ENROLLMENTS,
            [instance_id],
            registration_id,
            if_match=if_match,
        )

    async def list_individual_enrollments(
        self, instance_id: str, *, after: str | None, limit: int
    ) -> Page[IndividualEnrollment]:
        where = [ENROLLMENTS.table.c.instance_id == instance_id]
        rows, next_after = await self._read(
            "list_individual_enrollments",
            page_rows_txn,
            ENROLLMENTS,
            where,
            after=after,
            limit=limit,
        )
        return _page(rows, next_after, codec.row_to_individual_enrollment)

    async def count_individual_enrollments(self, instance_id: str) -> int:
        return await self._read(
            "count_individual_enrollments", count_rows_txn, ENROLLMENTS.table, instance_id
        )

    async def import_individual_enrollments(self, enrollments: list[IndividualEnrollment]) -> int:
        """Insert or replace many enrollments in one transaction; returns how many distinct ones.

        A registration ID given twice (in any spelling) is written once, the later one winning,
        as if the enrollments were put one after the other. Stored `created_at` values are kept.
        Raises DpsError(INSTANCE_NOT_FOUND) if any names a missing instance (nothing is written).
        """
        last: dict[tuple[str, str], int] = {}
        for start in range(0, len(enrollments), IMPORT_CHUNK_ROWS):
            for position in range(start, min(start + IMPORT_CHUNK_ROWS, len(enrollments))):
                enrollment = enrollments[position]
                last[(enrollment.instance_id, registration_key(enrollment.registration_id))] = (
                    position
                )
            await asyncio.sleep(
                0
            )  # a million IDs take ~1 s to index: let other tasks run meanwhile
        if not last:
            return 0
        positions = list(last.values())
        instances = sorted({instance_id for instance_id, _ in last})
        await self._owned_write(
            "import_individual_enrollments",
            instances,
            import_rows_txn,
            ENROLLMENTS,
            enrollments,
            positions,
            codec.individual_enrollment_to_row,
        )
        return len(positions)

    # -- enrollment groups -----------------------------------------------------------------------
    async def put_enrollment_group(
        self, group: EnrollmentGroup, *, if_match: str | None, create_only: bool = False
    ) -> EnrollmentGroup:
        row = codec.enrollment_group_to_row(group)
        label = GROUPS.label(group.enrollment_group_id)
        stored = await self._owned_write(
            "put_enrollment_group",
            [group.instance_id],
            put_row_txn,
            GROUPS,
            row,
            if_match=if_match,
            create_only=create_only,
            label=label,
        )
        return codec.row_to_enrollment_group(stored)

    async def get_enrollment_group(self, instance_id: str, group_id: str) -> EnrollmentGroup | None:
        row = await self._read("get_enrollment_group", get_row_txn, GROUPS, [instance_id], group_id)
        return _maybe(row, codec.row_to_enrollment_group)

    async def delete_enrollment_group(
        self, instance_id: str, group_id: str, *, if_match: str | None
    ) -> bool:
        return await self._write(
            "delete_enrollment_group",
            delete_row_txn,
            GROUPS,
            [instance_id],
            group_id,
            if_match=if_match,
        )

    async def list_enrollment_groups(
        self, instance_id: str, *, after: str | None, limit: int
    ) -> Page[EnrollmentGroup]:
        where = [GROUPS.table.c.instance_id == instance_id]
        rows, next_after = await self._read(
            "list_enrollment_groups", page_rows_txn, GROUPS, where, after=after, limit=limit
        )
        return _page(rows, next_after, codec.row_to_enrollment_group)

    # -- registration states and operations ------------------------------------------------------
    async def put_registration_state(self, state: RegistrationState) -> RegistrationState:
        row = codec.registration_state_to_row(state)
        stored = await self._owned_write(
            "put_registration_state", [state.instance_id], upsert_row_txn, REGISTRATIONS, row
        )
        return codec.row_to_registration_state(stored)

    async def get_registration_state(
        self, instance_id: str, registration_id: str
    ) -> RegistrationState | None:
        row = await self._read(
            "get_registration_state", get_row_txn, REGISTRATIONS, [instance_id], registration_id
        )
        return _maybe(row, codec.row_to_registration_state)

    async def delete_registration_state(
        self, instance_id: str, registration_id: str, *, if_match: str | None
    ) -> bool:
        return await self._write(
            "delete_registration_state",
            delete_row_txn,
            REGISTRATIONS,
            [instance_id],
            registration_id,
            if_match=if_match,
        )

    async def get_device_records(
        self, instance_id: str, registration_id: str, *, group_id: str | None
    ) -> DeviceRecords:
        state, individual, group = await self._read(
            "get_device_records", get_device_records_txn, instance_id, registration_id, group_id
        )
        return DeviceRecords(
            state=_maybe(state, codec.row_to_registration_state),
            individual=_maybe(individual, codec.row_to_individual_enrollment),
            group=_maybe(group, codec.row_to_enrollment_group),
        )

    async def list_registration_states_by_group(
        self, instance_id: str, group_id: str, *, after: str | None, limit: int
    ) -> Page[RegistrationState]:
        table = REGISTRATIONS.table
        where = [
            table.c.instance_id == instance_id,
            table.c.enrollment_group_key == registration_key(group_id),
        ]
        rows, next_after = await self._read(
            "list_registration_states_by_group",
            page_rows_txn,
            REGISTRATIONS,
            where,
            after=after,
            limit=limit,
        )
        return _page(rows, next_after, codec.row_to_registration_state)

    async def list_registration_states(
        self, instance_id: str, *, after: str | None, limit: int
    ) -> Page[RegistrationState]:
        where = [REGISTRATIONS.table.c.instance_id == instance_id]
        rows, next_after = await self._read(
            "list_registration_states",
            page_rows_txn,
            REGISTRATIONS,
            where,
            after=after,
            limit=limit,
        )
        return _page(rows, next_after, codec.row_to_registration_state)

    async def put_operation(self, operation: Operation) -> None:
        row = codec.operation_to_row(operation)
        await self._owned_write(
            "put_operation", [operation.instance_id], upsert_row_txn, OPERATIONS, row
        )

    async def record_registration(
        self, state: RegistrationState, operation: Operation, *, meter_day: date
    ) -> RegistrationState:
        if operation.instance_id != state.instance_id:
            raise ValueError("the operation must belong to the registration's instance")
        meter = {
            "instance_id": state.instance_id,
            "day": meter_day,
            "kind": MeterKind.REGISTRATION.value,
            "count": 1,
        }
        record = RegistrationRecord(
            codec.registration_state_to_row(state), codec.operation_to_row(operation), meter
        )
        stored = await self._registrations.submit(record)
        return codec.row_to_registration_state(stored)

    async def _commit_registrations(
        self, records: Sequence[RegistrationRecord]
    ) -> Sequence[Row | Exception]:
        """One transaction for a batch of record_registration calls (the group committer's)."""
        return await self._commit_owned_batch(
            "record_registrations",
            records,
            lambda record: str(record.state["instance_id"]),
            record_registrations_txn,
        )

    async def _commit_owned_batch(
        self,
        desc: str,
        writes: Sequence[WriteT],
        instance_of: Callable[[WriteT], str],
        txn: Callable[[Txn, Sequence[WriteT]], list[OutcomeT]],
    ) -> Sequence[OutcomeT | Exception]:
        """Commit a group committer's batch of instance-owned writes in one transaction.

        If an instance was deleted under one of the writes (foreign key), nothing of the batch
        was written. Alone, that caller gets the error; batched, each write is settled in a
        transaction of its own, so only the orphan's caller fails.
        """
        instance_ids = sorted({instance_of(write) for write in writes})
        try:
            return await self._owned_write(desc, instance_ids, txn, writes)
        except DpsError:
            if len(writes) == 1:
                raise
        outcomes: list[OutcomeT | Exception] = []
        for write in writes:
            try:
                stored = await self._owned_write(desc, [instance_of(write)], txn, [write])
                outcomes.append(stored[0])
            except DpsError as error:
                outcomes.append(error)
        return outcomes

    async def get_operation(self, instance_id: str, operation_id: str) -> Operation | None:
        # Operation IDs are generated by us and echoed back verbatim, so they are matched exactly.
        table = OPERATIONS.table
        where = (table.c.instance_id == instance_id) & (table.c.operation_id == operation_id)
        row = await self._read("get_operation", get_where_txn, table, where)
        return _maybe(row, codec.row_to_operation)

    async def delete_operations_before(self, before: datetime, *, limit: int = 10_000) -> int:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return await self._write(
            "delete_operations_before", delete_operations_before_txn, codec.to_utc(before), limit
        )

    # -- TPM challenges --------------------------------------------------------------------------
    async def put_tpm_challenge(self, challenge: TpmChallenge) -> None:
        row = codec.tpm_challenge_to_row(challenge)
        await self._owned_write(
            "put_tpm_challenge", [challenge.instance_id], put_tpm_challenge_txn, row
        )

    async def get_tpm_challenge(
        self, instance_id: str, registration_id: str
    ) -> TpmChallenge | None:
        row = await self._read(
            "get_tpm_challenge", get_row_txn, TPM_CHALLENGES, [instance_id], registration_id
        )
        return _maybe(row, codec.row_to_tpm_challenge)

    async def use_tpm_challenge(
        self,
        instance_id: str,
        registration_id: str,
        challenge_id: str,
        *,
        used_at: datetime,
        hub_key: bytes,
    ) -> bool:
        return await self._write(
            "use_tpm_challenge",
            use_tpm_challenge_txn,
            instance_id,
            registration_id,
            challenge_id,
            codec.to_utc(used_at),
            base64.b64encode(hub_key).decode("ascii"),
        )

    async def delete_tpm_challenge(self, instance_id: str, registration_id: str) -> bool:
        return await self._write(
            "delete_tpm_challenge",
            delete_row_txn,
            TPM_CHALLENGES,
            [instance_id],
            registration_id,
            if_match=None,
        )

    async def delete_tpm_challenges_expired_before(
        self, before: datetime, *, limit: int = 10_000
    ) -> int:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return await self._write(
            "delete_tpm_challenges_expired_before",
            delete_tpm_challenges_expired_txn,
            codec.to_utc(before),
            limit,
        )

    # -- CA certificates -------------------------------------------------------------------------
    async def put_ca_certificate(
        self, certificate: CaCertificate, *, if_match: str | None, create_only: bool = False
    ) -> CaCertificate:
        row = codec.ca_certificate_to_row(certificate)
        label = CERTIFICATES.label(certificate.name)
        stored = await self._owned_write(
            "put_ca_certificate",
            [certificate.instance_id],
            put_row_txn,
            CERTIFICATES,
            row,
            if_match=if_match,
            create_only=create_only,
            label=label,
        )
        return codec.row_to_ca_certificate(stored)

    async def get_ca_certificate(self, instance_id: str, name: str) -> CaCertificate | None:
        row = await self._read("get_ca_certificate", get_row_txn, CERTIFICATES, [instance_id], name)
        return _maybe(row, codec.row_to_ca_certificate)

    async def list_ca_certificates(self, instance_id: str) -> list[CaCertificate]:
        rows = await self._read("list_ca_certificates", list_rows_txn, CERTIFICATES, [instance_id])
        return [codec.row_to_ca_certificate(row) for row in rows]

    async def delete_ca_certificate(
        self, instance_id: str, name: str, *, if_match: str | None
    ) -> bool:
        return await self._write(
            "delete_ca_certificate",
            delete_row_txn,
            CERTIFICATES,
            [instance_id],
            name,
            if_match=if_match,
        )

    # -- built-in hub devices --------------------------------------------------------------------
    async def put_hub_device(self, device: HubDevice) -> HubDevice:
        write = HubDeviceWrite(codec.hub_device_to_row(device), create_only=False)
        stored = await self._hub_devices.submit(write)
        assert stored is not None  # an upsert always leaves a row
        return codec.row_to_hub_device(stored)

    async def create_hub_device(self, device: HubDevice) -> HubDevice | None:
        write = HubDeviceWrite(codec.hub_device_to_row(device), create_only=True)
        return _maybe(await self._hub_devices.submit(write), codec.row_to_hub_device)

    async def _commit_hub_devices(
        self, writes: Sequence[HubDeviceWrite]
    ) -> Sequence[Row | None | Exception]:
        """One transaction for a batch of put_hub_device / create_hub_device calls."""
        return await self._commit_owned_batch(
            "put_hub_devices",
            writes,
            lambda write: str(write.row["instance_id"]),
            put_hub_devices_txn,
        )

    async def get_hub_device(self, hub_host_name: str, device_id: str) -> HubDevice | None:
        owner = [registration_key(hub_host_name)]
        row = await self._read("get_hub_device", get_row_txn, DEVICES, owner, device_id)
        return _maybe(row, codec.row_to_hub_device)

    async def list_hub_devices(
        self, hub_host_name: str, *, after: str | None, limit: int
    ) -> Page[HubDevice]:
        where = [DEVICES.table.c.hub_key == registration_key(hub_host_name)]
        rows, next_after = await self._read(
            "list_hub_devices", page_rows_txn, DEVICES, where, after=after, limit=limit
        )
        return _page(rows, next_after, codec.row_to_hub_device)

    async def delete_hub_device(self, hub_host_name: str, device_id: str) -> bool:
        owner = [registration_key(hub_host_name)]
        return await self._write(
            "delete_hub_device", delete_row_txn, DEVICES, owner, device_id, if_match=None
        )

    # -- audit and metering ----------------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        await self._write("append_audit", append_audit_txn, codec.audit_to_row(entry))

    async def list_audit(
        self, *, instance_id: str | None, before_id: int | None, limit: int
    ) -> list[AuditEntry]:
        rows = await self._read("list_audit", list_audit_txn, instance_id, before_id, limit)
        return [codec.row_to_audit(row) for row in rows]

    async def add_meter(self, instance_id: str, day: date, kind: MeterKind, count: int = 1) -> None:
        row = {"instance_id": instance_id, "day": day, "kind": kind.value, "count": count}
        await self._owned_write("add_meter", [instance_id], add_meter_txn, row)

    async def list_meters(self, instance_id: str, *, since: date | None = None) -> list[MeterCount]:
        rows = await self._read("list_meters", list_meters_txn, instance_id, since)
        return [codec.row_to_meter(row) for row in rows]


if TYPE_CHECKING:

    def _implements_store(store: SqlStore) -> Store:
        # mypy proves here that SqlStore has every method of the Store protocol, signatures included.
        return store
