"""`opendps serve` runs the MQTT listener: its real port is in the status, devices register
over it and over the HTTPS port's WebSocket route, and the metrics gauge counts them."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

from opendps.app.wiring import App
from opendps.attestation.sas import build_sas_token
from opendps.model.enrollment import (
    Attestation,
    AttestationType,
    EnrollmentSpec,
    IndividualEnrollment,
    SymmetricKeyAttestation,
)
from opendps.simulator.api import DeviceParams
from opendps.simulator.mqtt import register_mqtt

from .conftest import serving, settings_for

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


async def _enroll(app: App, rid: str) -> None:
    now = app.context.clock.now()
    spec = EnrollmentSpec(
        Attestation(AttestationType.SYMMETRIC_KEY, symmetric_key=SymmetricKeyAttestation(KEY, KEY))
    )
    enrollment = IndividualEnrollment(
        app.default_instance.instance.id, rid, spec, etag='"e"', created_at=now, updated_at=now
    )
    await app.store.put_individual_enrollment(enrollment, if_match=None)


async def test_mqtt_listener_reports_its_bound_port_and_registers_devices(tmp_path: Path) -> None:
    async with serving(settings_for(tmp_path / "data")) as server:
        status = server.info.status
        mqtt = urlsplit(status.endpoints.mqtt)
        https = urlsplit(status.endpoints.https)
        assert mqtt.scheme == "mqtts" and mqtt.port not in (None, 0, 8883)
        scope = status.id_scope
        for rid, port, websocket in (("srv-tcp", mqtt.port, False), ("srv-ws", https.port, True)):
            await _enroll(server.app, rid)
            token = build_sas_token(
                f"{scope}/registrations/{rid}", KEY, int(time.time()) + 600, key_name="registration"
            )
            params = DeviceParams(
                "localhost", port or 0, scope, rid, token, None, None, None, status.ca_certificate
            )

            outcome = await register_mqtt(params, websocket=websocket)

            assert outcome.assigned, outcome.body
        metrics = server.app.metrics.render().decode()
        assert 'listener="mqtt"' in metrics and 'listener="mqtt_ws"' in metrics
