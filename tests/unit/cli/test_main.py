from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opendps import __version__
from opendps.app.config import SETTINGS
from opendps.app.status import Endpoints, ServerState, StatusDocument, write_state
from opendps.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_operator_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OPENDPS_"):
            monkeypatch.delenv(name)


def _write_state(data_dir: Path, id_scope: str = "0ne00000001") -> StatusDocument:
    data_dir.mkdir(parents=True, exist_ok=True)
    status = StatusDocument(
        id_scope=id_scope,
        service_connection_string="HostName=localhost;SharedAccessKeyName=p;SharedAccessKey=a2V5",
        ca_certificate=data_dir / "ca.pem",
        endpoints=Endpoints(
            "https://localhost:443", "mqtts://localhost:8883", "amqps://localhost:5671"
        ),
        data_dir=data_dir,
        database=f"sqlite:///{data_dir}/opendps.db",
    )
    write_state(data_dir, ServerState(status, os.getpid(), data_dir / "admin.key"))
    return status


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"opendps {__version__}"


def test_serve_help_lists_every_setting_with_its_environment_variable() -> None:
    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "300"}, terminal_width=300)
    assert result.exit_code == 0
    for setting in SETTINGS:
        assert setting.flag in result.stdout
        assert setting.env in result.stdout
    assert "--config" in result.stdout


def test_status_json_prints_exactly_the_status_document(tmp_path: Path) -> None:
    status = _write_state(tmp_path)
    result = runner.invoke(app, ["status", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == status.to_json()


def test_status_table_shows_the_connection_string_unbroken(tmp_path: Path) -> None:
    status = _write_state(tmp_path)
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)], terminal_width=40)
    assert result.exit_code == 0, result.output
    assert status.service_connection_string is not None
    assert status.service_connection_string in result.stdout
    assert "ID scope" in result.stdout and "0ne00000001" in result.stdout


def test_status_takes_the_data_dir_flag_over_env_over_config_file(tmp_path: Path) -> None:
    _write_state(tmp_path / "flag", "0ne0000F1A6")
    _write_state(tmp_path / "env", "0ne00000E4F")
    _write_state(tmp_path / "file", "0ne0000F11E")
    config = tmp_path / "opendps.toml"
    config.write_text(f'data_dir = "{tmp_path / "file"}"\n')

    def scope(args: list[str], env: dict[str, str]) -> str:
        result = runner.invoke(app, ["status", "--json", "--config", str(config), *args], env=env)
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["idScope"])

    env = {"OPENDPS_DATA_DIR": str(tmp_path / "env")}
    assert scope(["--data-dir", str(tmp_path / "flag")], env) == "0ne0000F1A6"
    assert scope([], env) == "0ne00000E4F"
    assert scope([], {}) == "0ne0000F11E"


def test_status_without_state_exits_1_and_says_how_to_start(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "opendps serve" in result.output


def test_invalid_settings_exit_2_naming_the_source(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--data-dir", str(tmp_path)], env={"OPENDPS_LOG_LEVEL": "loud"}
    )
    assert result.exit_code == 2
    assert "OPENDPS_LOG_LEVEL" in result.output
    assert not (tmp_path / "state.json").exists()
