"""DPS topic and user-name grammar (protocol.md §3, clients.md §2/§3b)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from opendps.model.errors import DpsError
from opendps.transports.mqtt.topics import (
    DeviceIdentity,
    RegisterTopic,
    StatusTopic,
    extract_rid,
    parse_request_topic,
    parse_response_topic,
    parse_username,
    response_topic,
)

PYTHON_USERNAME = (
    "0ne00000001/registrations/dev-cap-1/api-version=2019-03-31&ClientVersion="
    "azure-iot-device-provisioning-py%2F2.14.0%283.11.7%3BLinux%20%231%20SMP%29"
)


def test_python_user_name_parses() -> None:
    assert parse_username(PYTHON_USERNAME) == DeviceIdentity(
        "0ne00000001", "dev-cap-1", "2019-03-31"
    )


def test_minimal_user_name_without_query_parses() -> None:
    assert parse_username("0ne00000001/registrations/d") == DeviceIdentity("0ne00000001", "d", None)


@pytest.mark.parametrize(
    "username",
    ["", "0ne00000001", "0ne00000001/devices/d/x", "/registrations/d", "s/registrations/"],
)
def test_malformed_user_names_are_refused(username: str) -> None:
    with pytest.raises(DpsError):
        parse_username(username)


def test_register_topic_keeps_the_rid_raw() -> None:
    topic = "$dps/registrations/PUT/iotdps-register/?$rid=6f1e%2Dab"
    assert parse_request_topic(topic) == RegisterTopic("6f1e%2Dab")


def test_status_topic_decodes_the_operation_id() -> None:
    topic = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.a%2Eb"
    assert parse_request_topic(topic) == StatusTopic("2", "4.a.b")


@pytest.mark.parametrize(
    "topic",
    [
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1",  # no operationId
        "$dps/registrations/PUT/something-else/?$rid=1",
        "devices/d/messages/events/",
    ],
)
def test_other_topics_are_bad_requests(topic: str) -> None:
    with pytest.raises(DpsError) as caught:
        parse_request_topic(topic)
    assert caught.value.error_code == 400000


@pytest.mark.parametrize(
    "topic",
    [
        "$dps/registrations/PUT/iotdps-register/",
        "$dps/registrations/PUT/iotdps-register/?rid=1",  # AT-command devices: no `$`
    ],
)
def test_a_request_without_rid_is_served_with_an_empty_rid(topic: str) -> None:
    assert parse_request_topic(topic) == RegisterTopic("")


def test_error_answers_echo_the_rid_or_nothing() -> None:
    assert extract_rid("x/?$rid=abc&y=1") == "abc"
    assert extract_rid("x/?rid=1") == "" and extract_rid("x") == ""


def test_response_topic_has_two_dollars_an_integer_retry_after_and_status_in_segment_4() -> None:
    topic = response_topic(202, "6f1e", 3)

    assert topic == "$dps/registrations/res/202/?$rid=6f1e&retry-after=3"
    assert len(topic.split("$")) == 3  # Python splits on `$` and takes part [2]
    assert topic.split("/")[3] == "202"
    assert response_topic(200, "1") == "$dps/registrations/res/200/?$rid=1"


@given(
    st.sampled_from([200, 202, 400, 401, 404, 429, 500]),
    st.text(alphabet="abcdef0123456789-%", max_size=36),
    st.none() | st.integers(0, 3600),
)
def test_response_topics_round_trip_through_the_device_parser(
    status: int, rid: str, retry_after: int | None
) -> None:
    parsed = parse_response_topic(response_topic(status, rid, retry_after))

    assert (parsed.status, parsed.rid, parsed.retry_after) == (status, rid, retry_after)


@given(st.text(max_size=80))
def test_arbitrary_topics_give_a_request_or_our_error(topic: str) -> None:
    try:
        parse_request_topic(topic)
    except DpsError as error:
        assert error.error_code == 400000
