from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from opendps.app import config
from opendps.app.config import (
    SETTINGS,
    ConfigError,
    Settings,
    check_docs,
    load_settings,
    redact_database_url,
    render_docs,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "opendps.toml"
    path.write_text(text)
    return path


def test_every_table_row_is_a_settings_field_and_back() -> None:
    table = [setting.name for setting in SETTINGS]
    assert table == [field.name for field in fields(Settings) if field.name != "explicit"]


def test_flag_and_env_names_follow_from_the_setting_name() -> None:
    port = config.SETTINGS_BY_NAME["https_port"]
    assert (port.flag, port.env) == ("--https-port", "OPENDPS_HTTPS_PORT")
    assert all(setting.env == "OPENDPS_" + setting.name.upper() for setting in SETTINGS)


def test_defaults_apply_when_nothing_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({}, {})
    assert settings.data_dir == tmp_path / ".opendps"
    assert settings.database == f"sqlite:///{tmp_path}/.opendps/opendps.db"
    assert (settings.https_port, settings.mqtt_port, settings.amqp_port) == (443, 8883, 5671)
    assert settings.public_host == ("localhost",)
    assert settings.bind is None
    assert settings.explicit == frozenset()


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    file = _write(tmp_path, "https_port = 1001\nmqtt_port = 1002\namqp_port = 1003\n")
    env = {"OPENDPS_HTTPS_PORT": "2001", "OPENDPS_MQTT_PORT": "2002"}
    settings = load_settings({"https_port": 3001}, env, file)
    assert settings.https_port == 3001  # flag over env and file
    assert settings.mqtt_port == 2002  # env over file
    assert settings.amqp_port == 1003  # file over default
    assert settings.explicit == {"https_port", "mqtt_port", "amqp_port"}


def test_a_flag_that_was_not_given_does_not_hide_the_environment() -> None:
    settings = load_settings(
        {"https_port": None, "public_host": []}, {"OPENDPS_HTTPS_PORT": "9443"}
    )
    assert settings.https_port == 9443
    assert settings.public_host == ("localhost",)


def test_repeatable_settings_take_lists_from_flags_files_and_commas_in_env(tmp_path: Path) -> None:
    file = _write(tmp_path, 'public_host = ["file.example", "10.0.0.1"]\n')
    assert load_settings({}, {}, file).public_host == ("file.example", "10.0.0.1")
    env = {"OPENDPS_PUBLIC_HOST": "a.example, b.example"}
    assert load_settings({}, env, file).public_host == ("a.example", "b.example")
    assert load_settings({"public_host": ["flag.example"]}, env, file).public_host == (
        "flag.example",
    )


def test_injected_default_is_used_but_is_not_explicit() -> None:
    settings = load_settings({}, {}, defaults={"https_port": 12345})
    assert settings.https_port == 12345
    assert not settings.is_explicit("https_port")


def test_an_explicit_database_url_replaces_the_derived_sqlite_one() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/opendps"
    assert load_settings({}, {"OPENDPS_DATABASE": url}).database == url


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({}, {"OPENDPS_HTTPS_PORT": "https"}, "OPENDPS_HTTPS_PORT: expected an integer"),
        ({"https_port": 70000}, {}, "--https-port: a port must be between 0 and 65535"),
        ({}, {"OPENDPS_LOG_LEVEL": "loud"}, "expected one of debug, info, warning, error"),
        ({}, {"OPENDPS_SHUTDOWN_TIMEOUT": "-1"}, "must be at least 0"),
        ({"max_connections": 0}, {}, "--max-connections: must be at least 1"),
        ({"database": "mysql://x"}, {}, "unsupported URL"),
    ],
)
def test_invalid_values_are_rejected_naming_their_source(
    flags: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(flags, env)


def test_unknown_keys_in_the_config_file_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting.*http_port"):
        load_settings({}, {}, _write(tmp_path, "http_port = 1\n"))


def test_a_config_file_value_of_the_wrong_type_names_the_file(tmp_path: Path) -> None:
    file = _write(tmp_path, 'https_port = "x"\n')
    with pytest.raises(ConfigError, match=r"opendps\.toml: https_port: expected an integer"):
        load_settings({}, {}, file)


def test_log_choices_are_case_insensitive() -> None:
    settings = load_settings({"log_level": "DEBUG", "log_format": "Json"}, {})
    assert (settings.log_level, settings.log_format) == ("debug", "json")


def test_database_password_is_removed_for_display() -> None:
    assert (
        redact_database_url("postgresql://app:s3cret@db.example:5433/dps")
        == "postgresql://app@db.example:5433/dps"
    )
    assert redact_database_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_docs_list_every_flag_env_var_and_default() -> None:
    docs = render_docs()
    for setting in SETTINGS:
        assert f"`{setting.flag}`" in docs
        assert f"`{setting.env}`" in docs
    assert "| `https_port` | `--https-port` | `OPENDPS_HTTPS_PORT` | port | `443` |" in docs


def test_check_docs_fails_on_a_stale_file_and_passes_after_writing(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    target.write_text("# stale\n")
    assert config._main(["--check-docs", str(target)]) == 1
    assert config._main(["--write-docs", str(target)]) == 0
    assert config._main(["--check-docs", str(target)]) == 0
    assert check_docs(target)


def test_checked_in_configuration_docs_are_current() -> None:
    assert check_docs(REPO_ROOT / "docs" / "configuration.md"), (
        "run `python -m opendps.app.config --write-docs docs/configuration.md`"
    )
