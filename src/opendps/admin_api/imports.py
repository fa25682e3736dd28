"""Bulk import of individual enrollments: any number, streamed (no 10-item bulk limit).

`POST /admin/v1/instances/{instance}/enrollments/import` takes JSON lines (NDJSON) or one JSON
array of individual enrollments in the DPS 2021-10-01 shape (protocol.md §7.2). The body is
parsed as it arrives (admin_api/import_stream.py), each enrollment is validated with the service
API's own rules, and valid ones are written in batches through the store's import fast path
(insert or replace). A bad line does not stop the import: the answer counts what was imported
and lists each failed line with its DPS error.
"""

from __future__ import annotations

import asyncio
import heapq
import json

from aiohttp import web

from opendps.admin_api.auth import AdminCaller, resolve_instance
from opendps.admin_api.import_stream import ImportItem, ImportSplitter, MalformedImport
from opendps.admin_api.schemas import ImportLineError, ImportResult
from opendps.admin_api.wire import respond
from opendps.model.audit import MeterKind
from opendps.model.enrollment import IndividualEnrollment
from opendps.model.errors import BODY_TOO_LARGE, INVALID_BODY, DpsError
from opendps.model.ids import parse_device_id, parse_registration_id, registration_key
from opendps.model.instance import Instance
from opendps.service_api import schemas as service_schemas
from opendps.service_api.audit import record_change
from opendps.service_api.context import ServiceContext
from opendps.service_api.enrollment_spec import build_spec

# Enrollments per store transaction: large enough that a million-line import is ~2,000
# transactions, small enough that one transaction stays short and its rows fit in memory.
IMPORT_BATCH_SIZE = 500
# Bytes read from the socket at a time; the splitter copes with any chunking.
IMPORT_READ_CHUNK_BYTES = 64 * 1024
# Failed lines listed in the answer; a file with a systematic mistake fails on every line, and
# the first thousand say as much as a million would.
MAX_REPORTED_IMPORT_ERRORS = 1000


# Parsed batches waiting for the writer: one, so the next batch is parsed while the previous
# one is written (the database's work overlaps ours) and the request holds at most three.
IMPORT_BATCHES_AHEAD = 1

_Batch = tuple[list[IndividualEnrollment], list[tuple[int, str]]]  # enrollments, (line, ID)s


class _ImportRun:
    """Counts, batches and errors of one import request.

    Two coroutines share it: `read` parses items into batches and `write` stores them, in
    order, one transaction each, while `read` goes on with the next batch.
    """

    def __init__(self, ctx: ServiceContext, instance: Instance) -> None:
        self._ctx = ctx
        self._instance = instance
        # Keyed by the case-folded registration ID: a repeated ID replaces the earlier line
        # (the last one wins, as separate PUTs would), and no transaction writes a key twice.
        self._batch: dict[str, IndividualEnrollment] = {}
        self._batch_lines: list[tuple[int, str]] = []
        # `None` after the last batch: the writer stops.
        self._ready: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=IMPORT_BATCHES_AHEAD)
        self.imported = 0  # only lines whose transaction has committed
        self.failed = 0
        # The failed lines with the lowest numbers, as a max-heap on the line number: the
        # writer reports a batch's lines after the reader reported later ones.
        self._errors: list[tuple[int, int, ImportLineError]] = []

    async def read(self, request: web.Request, splitter: ImportSplitter) -> None:
        """Parse the whole body into batches for `write`, then tell it that was the last."""
        try:
            async for chunk in request.content.iter_chunked(IMPORT_READ_CHUNK_BYTES):
                for item in splitter.feed(chunk):
                    await self._add(item)
            for item in splitter.finish():
                await self._add(item)
        except MalformedImport as err:
            # Items before the break are kept; the break itself is reported like a failed line.
            reason = f"The body is malformed: {err.reason}."
            self.fail(err.number, None, DpsError(INVALID_BODY, reason))
        await self._hand_over()
        await self._ready.put(None)

    async def write(self) -> None:
        """Store the batches `read` hands over, in order, until it has no more."""
        while (batch := await self._ready.get()) is not None:
            enrollments, lines = batch
            try:
                await self._ctx.store.import_individual_enrollments(enrollments)
                self.imported += len(lines)
            except DpsError as err:
                # The store refused the whole transaction; every line of the batch failed.
                for number, registration_id in lines:
                    self.fail(number, registration_id, err)

    async def _add(self, item: ImportItem) -> None:
        registration_id: str | None = None
        try:
            data = _decode(item)
            raw_id = data.get("registrationId")
            registration_id = raw_id if isinstance(raw_id, str) else None
            enrollment = await self._enrollment(data)
        except DpsError as err:
            self.fail(item.number, registration_id, err)
            return
        self._batch[registration_key(enrollment.registration_id)] = enrollment
        self._batch_lines.append((item.number, enrollment.registration_id))
        if len(self._batch) >= IMPORT_BATCH_SIZE:
            await self._hand_over()

    async def _enrollment(self, data: dict[str, object]) -> IndividualEnrollment:
        wire = service_schemas.parse_object(service_schemas.IndividualEnrollment, data)
        registration_id = parse_registration_id(wire.registration_id)
        spec = await build_spec(self._ctx, self._instance, wire, kind="individual", existing=None)
        now = self._ctx.clock.now()
        return IndividualEnrollment(
            instance_id=self._instance.id,
            registration_id=registration_id,
            spec=spec,
            device_id=parse_device_id(wire.device_id) if wire.device_id else None,
            optional_device_information=wire.optional_device_information,
            etag=self._ctx.ids.new_etag(),
            created_at=now,
            updated_at=now,
        )

    async def _hand_over(self) -> None:
        if not self._batch:
            return
        batch: _Batch = (list(self._batch.values()), self._batch_lines)
        self._batch, self._batch_lines = {}, []
        await self._ready.put(batch)

    def fail(self, number: int, registration_id: str | None, err: DpsError) -> None:
        self.failed += 1
        if len(self._errors) == MAX_REPORTED_IMPORT_ERRORS and number > -self._errors[0][0]:
            return
        error = ImportLineError(
            line=number,
            registration_id=registration_id,
            error_code=err.error_code,
            message=err.message,
        )
        # The failure count breaks ties (a malformed body's break may share a line's number).
        entry = (-number, -self.failed, error)
        if len(self._errors) < MAX_REPORTED_IMPORT_ERRORS:
            heapq.heappush(self._errors, entry)
        else:
            heapq.heapreplace(self._errors, entry)

    def result(self) -> ImportResult:
        errors = [error for _, _, error in sorted(self._errors, reverse=True)]
        return ImportResult(
            imported=self.imported,
            failed=self.failed,
            errors=errors,
            errors_truncated=self.failed > len(errors),
        )


def _decode(item: ImportItem) -> dict[str, object]:
    if item.text is None:
        raise DpsError(BODY_TOO_LARGE, "The enrollment is larger than the per-item limit.")
    try:
        data = json.loads(item.text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DpsError(INVALID_BODY, "The enrollment is not valid JSON.") from None
    if not isinstance(data, dict):
        raise DpsError(INVALID_BODY, "Each enrollment must be a JSON object.")
    return data


async def import_enrollments(
    request: web.Request, ctx: ServiceContext, caller: AdminCaller
) -> web.Response:
    instance = await resolve_instance(ctx, caller, request.match_info["instance"])
    # One enrollment may be as large as any single service API body, no larger.
    splitter = ImportSplitter(ctx.limits.max_body_bytes)
    run = _ImportRun(ctx, instance)
    # A failure of either (the database gone, the client gone) cancels the other and propagates
    # as itself, not as a group, to the error handling every endpoint shares; batches already
    # committed stay committed, as they did before the failure.
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(run.write())
            await run.read(request, splitter)
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    if run.imported:
        await record_change(
            ctx,
            instance.id,
            caller.actor,
            "enrollment.import",
            f"enrollments ({run.imported} imported)",
            meter=MeterKind.ENROLLMENT_CHANGE,
            count=run.imported,
        )
    return respond(run.result())
