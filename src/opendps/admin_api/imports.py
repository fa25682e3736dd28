"""Bulk import of individual enrollments: any number, streamed (no 10-item bulk limit).

`POST /admin/v1/instances/{instance}/enrollments/import` takes JSON lines (NDJSON) or one JSON
array of individual enrollments in the DPS 2021-10-01 shape (protocol.md §7.2). The body is
parsed as it arrives (admin_api/import_stream.py), each enrollment is validated with the service
API's own rules, and valid ones are written in batches through the store's import fast path
(insert or replace). A bad line does not stop the import: the answer counts what was imported
and lists each failed line with its DPS error.
"""

from __future__ import annotations

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


class _ImportRun:
    """Counts, batches and errors of one import request."""

    def __init__(self, ctx: ServiceContext, instance: Instance) -> None:
        self._ctx = ctx
        self._instance = instance
        # Keyed by the case-folded registration ID: a repeated ID replaces the earlier line
        # (the last one wins, as separate PUTs would), and no transaction writes a key twice.
        self._batch: dict[str, IndividualEnrollment] = {}
        self._batch_lines: list[tuple[int, str]] = []
        self.imported = 0
        self.failed = 0
        self.errors: list[ImportLineError] = []

    async def add(self, item: ImportItem) -> None:
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
            await self.flush()

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

    async def flush(self) -> None:
        if not self._batch:
            return
        batch, lines = list(self._batch.values()), self._batch_lines
        self._batch, self._batch_lines = {}, []
        try:
            await self._ctx.store.import_individual_enrollments(batch)
            self.imported += len(lines)
        except DpsError as err:
            # The store refused the whole transaction; every line of the batch failed with it.
            for number, registration_id in lines:
                self.fail(number, registration_id, err)

    def fail(self, number: int, registration_id: str | None, err: DpsError) -> None:
        self.failed += 1
        if len(self.errors) < MAX_REPORTED_IMPORT_ERRORS:
            self.errors.append(
                ImportLineError(
                    line=number,
                    registration_id=registration_id,
                    error_code=err.error_code,
                    message=err.message,
                )
            )

    def result(self) -> ImportResult:
        return ImportResult(
            imported=self.imported,
            failed=self.failed,
            errors=self.errors,
            errors_truncated=self.failed > len(self.errors),
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
    try:
        async for chunk in request.content.iter_chunked(IMPORT_READ_CHUNK_BYTES):
            for item in splitter.feed(chunk):
                await run.add(item)
        for item in splitter.finish():
            await run.add(item)
    except MalformedImport as err:
        # Items before the break are kept; the break itself is reported like a failed line.
        run.fail(err.number, None, DpsError(INVALID_BODY, f"The body is malformed: {err.reason}."))
    await run.flush()
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
