"""`opendps device register`, `opendps allocation explain` and `opendps hub devices|device`
against a running server (real TLS front door, SQLite, the full wiring of `opendps serve`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.cli.conftest import Cli
from tests.pki import build_test_pki

from opendps.attestation.symmetric import derive_device_key

KEY = "Zmlyc3Qta2V5LWZpcnN0LWtleS1maXJzdC1rZXktZmlyc3Q="
OTHER_KEY = "c2Vjb25kLWtleS1zZWNvbmQta2V5LXNlY29uZC1rZXktc2Vj"
BUILTIN = "default.builtin-hub.localhost"
HUB_2 = "hub-2.builtin-hub.localhost"
TWIN: dict[str, Any] = {"tags": {"line": "A"}, "properties": {"desired": {"interval": 30}}}


def _group_with_twin(cli: Cli, tmp_path: Path, group_id: str = "factory") -> None:
    twin = tmp_path / "twin.json"
    twin.write_text(json.dumps(TWIN))
    cli.ok(
        "enrollment-group", "create", group_id, "--primary-key", KEY, "--initial-twin", str(twin)
    )


def test_a_device_with_a_group_key_registers_and_lands_on_the_hub_with_its_initial_twin(
    cli: Cli, tmp_path: Path
) -> None:
    _group_with_twin(cli, tmp_path)
    result = cli.json("device", "register", "--registration-id", "sensor-7", "--group-key", KEY)
    assert result["status"] == "assigned"
    state = result["registrationState"]
    assert (state["assignedHub"], state["deviceId"], state["substatus"]) == (
        BUILTIN,
        "sensor-7",
        "initialAssignment",
    )
    listed = cli.json("hub", "devices", BUILTIN)
    assert [d["deviceId"] for d in listed] == ["sensor-7"]
    device = cli.json("hub", "device", "show", BUILTIN, "sensor-7")
    assert device["twin"]["tags"] == TWIN["tags"]
    assert device["twin"]["desired"] == TWIN["properties"]["desired"]
    assert device["authentication"] == {"primaryKey": "***", "secondaryKey": "***"}
    human = cli.ok("hub", "device", "show", BUILTIN, "sensor-7")
    assert "interval" in human and derive_device_key(KEY, "sensor-7") not in human
    assert "Deleted" in cli.ok("hub", "device", "delete", BUILTIN, "sensor-7")
    assert cli.json("hub", "devices", BUILTIN) == []


def test_the_human_result_shows_the_hub_and_exit_code_0(cli: Cli, tmp_path: Path) -> None:
    cli.ok("enrollment", "create", "dev-1", "--primary-key", KEY, "--secondary-key", OTHER_KEY)
    out = cli.ok("device", "register", "--registration-id", "dev-1", "--symmetric-key", OTHER_KEY)
    assert "assigned" in out and BUILTIN in out


def test_a_wrong_key_exits_1_and_prints_the_error_body(cli: Cli, tmp_path: Path) -> None:
    _group_with_twin(cli, tmp_path)
    result = cli.run(
        "device", "register", "--registration-id", "sensor-8", "--group-key", OTHER_KEY, "--json"
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["errorCode"] == 401002
    human = cli.run("device", "register", "--registration-id", "sensor-8", "--group-key", OTHER_KEY)
    assert human.exit_code == 1 and "401002" in human.stdout and "401" in human.stdout


def test_a_disabled_group_is_reported_and_exits_1(cli: Cli) -> None:
    cli.ok("enrollment-group", "create", "off", "--primary-key", KEY, "--disabled")
    result = cli.run(
        "device", "register", "--registration-id", "sensor-9", "--group-key", KEY, "--json"
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "disabled"


def test_an_unenrolled_certificate_device_is_refused_with_401(cli: Cli, tmp_path: Path) -> None:
    pki = build_test_pki(tmp_path)
    certificate, key = pki.client_files(pki.device, "device")
    result = cli.run(
        "device", "register", "--registration-id", "device-1", "--certificate", str(certificate),
        "--key", str(key), "--json",
    )  # fmt: skip
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    # The TLS handshake carried the chain (a missing client certificate would fail the same
    # way, which the simulator's own tests tell apart); the server answered with a DPS body.
    assert body["errorCode"] == 401002


def test_an_enrolled_certificate_device_registers_over_every_transport(
    cli: Cli, tmp_path: Path
) -> None:
    cli.ok("cert", "create-device", "--registration-id", "cert-dev", "--out", str(tmp_path))
    cli.ok("enrollment", "create", "cert-dev", "--certificate", str(tmp_path / "cert-dev.pem"))
    for transport in ("https", "mqtt", "mqtt-ws", "amqp", "amqp-ws"):
        result = cli.json(
            "device", "register", "--registration-id", "cert-dev", "--transport", transport,
            "--certificate", str(tmp_path / "cert-dev-chain.pem"),
            "--key", str(tmp_path / "cert-dev.key"),
        )  # fmt: skip
        assert result["status"] == "assigned", transport
        subject = result["registrationState"]["x509"]["certificateInfo"]["subjectName"]
        assert "CN=cert-dev" in subject


def test_device_register_refuses_conflicting_credentials(cli: Cli) -> None:
    both = cli.fails("device", "register", "--registration-id", "d", "--group-key", KEY,
                     "--symmetric-key", KEY)  # fmt: skip
    assert "exactly one" in both
    assert "not valid base64" in cli.fails(
        "device", "register", "--registration-id", "d", "--group-key", "%%%"
    )
    assert "--transport" in cli.fails(
        "device",
        "register",
        "--registration-id",
        "d",
        "--group-key",
        KEY,
        "--transport",
        "carrier-pigeon",
    )
    assert "not JSON" in cli.fails(
        "device", "register", "--registration-id", "d", "--group-key", KEY, "--payload", "{"
    )


def test_allocation_explain_predicts_the_hub_a_registration_then_gets(
    cli: Cli, tmp_path: Path
) -> None:
    cli.ok("hub", "add", HUB_2, "--weight", "3")
    _group_with_twin(cli, tmp_path)
    answers: dict[str, str] = {}
    for n in range(6):
        registration_id = f"sensor-{n}"
        explained = cli.json("allocation", "explain", "--registration-id", registration_id)
        [decision] = explained["decisions"]
        assert decision["enrollmentId"] == "factory" and "key decides" in decision["matchedBy"]
        assert {h["hostName"] for h in decision["hubs"]} == {BUILTIN, HUB_2}
        answers[registration_id] = decision["assignedHub"]
    for registration_id, hub in answers.items():
        result = cli.json(
            "device", "register", "--registration-id", registration_id, "--group-key", KEY
        )
        assert result["registrationState"]["assignedHub"] == hub
    again = cli.json("allocation", "explain", "--registration-id", "sensor-0")
    assert again["previousRegistration"]["assignedHub"] == answers["sensor-0"]
    human = cli.ok("allocation", "explain", "--registration-id", "sensor-1")
    assert "nothing was registered" in human and "hashed" in human


def test_allocation_explain_of_an_unknown_device_says_it_would_be_refused(cli: Cli) -> None:
    answer = cli.json("allocation", "explain", "--registration-id", "nobody")
    assert answer["decisions"] == [] and "401" in answer["summary"]
    assert "not JSON" in cli.fails(
        "allocation", "explain", "--registration-id", "x", "--payload", "["
    )


def test_hub_devices_of_an_unlinked_hub_fail(cli: Cli) -> None:
    assert "not linked" in cli.fails("hub", "devices", "nowhere.example.net")
