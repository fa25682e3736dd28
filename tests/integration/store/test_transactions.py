"""How SqlStore runs transactions: retries after concurrency failures, and only after those."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from tests.storefixtures import sample_instance

from opendps.store import codec, sql
from opendps.store.sql import SqlStore, Txn


class _PostgresError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def _concurrency_failure(store: SqlStore) -> sa.exc.DBAPIError:
    """The error the database reports when a transaction lost a lock race (and was rolled back)."""
    if store.dialect.name == "sqlite":
        orig = sqlite3.OperationalError("database is locked")
        orig.sqlite_errorname = "SQLITE_BUSY"
        return sa.exc.OperationalError("INSERT …", None, orig)
    return sa.exc.OperationalError("INSERT …", None, _PostgresError("40P01"))


def _constraint_failure() -> sa.exc.DBAPIError:
    return sa.exc.IntegrityError("INSERT …", None, _PostgresError("23505"))


async def test_a_transaction_that_lost_a_lock_race_is_run_again(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "RETRY_BACKOFF_SECONDS", 0.0)
    calls: list[int] = []

    def flaky_txn(txn: Txn) -> int:
        calls.append(1)
        if len(calls) < 3:
            raise _concurrency_failure(store)
        return int(txn.execute(sa.select(sa.literal(7))).scalar_one())

    assert await store._write("flaky", flaky_txn) == 7
    assert len(calls) == 3


async def test_a_transaction_still_failing_after_the_last_attempt_raises(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql, "RETRY_BACKOFF_SECONDS", 0.0)
    calls: list[int] = []

    def always_txn(txn: Txn) -> None:
        calls.append(1)
        raise _concurrency_failure(store)

    with pytest.raises(sa.exc.OperationalError):
        await store._write("always", always_txn)
    assert len(calls) == sql.MAX_TXN_ATTEMPTS


async def test_other_database_errors_are_not_retried(store: SqlStore) -> None:
    calls: list[int] = []

    def broken_txn(txn: Txn) -> None:
        calls.append(1)
        raise _constraint_failure()

    with pytest.raises(sa.exc.IntegrityError):
        await store._read("broken", broken_txn)
    assert len(calls) == 1


async def test_a_failed_transaction_leaves_no_partial_writes(store: SqlStore) -> None:
    def half_txn(txn: Txn) -> None:
        sql.create_instance_txn(txn, codec.instance_to_row(sample_instance("half")), [], [])
        raise RuntimeError("fails after the first insert")

    with pytest.raises(RuntimeError):
        await store._write("half", half_txn)
    assert await store.get_instance("inst-half") is None
