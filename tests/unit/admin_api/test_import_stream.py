"""The streamed import splitter: JSON lines and JSON arrays, cut into chunks anywhere."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opendps.admin_api.import_stream import ImportItem, ImportSplitter, MalformedImport

ENROLLMENTS = [
    {"registrationId": "dev-1", "attestation": {"type": "symmetricKey"}},
    {"registrationId": "dev-2", "initialTwin": {"tags": {"text": 'a "quoted" ] } , [ {'}}},
    {"registrationId": "dev-3", "optionalDeviceInformation": {"list": [1, [2, {"x": "\\"}]]}},
    {"registrationId": "dév-4", "payload": "ünïcödé ✓"},
]


def _split(body: bytes, chunk: int, max_item: int = 10_000) -> list[ImportItem]:
    splitter = ImportSplitter(max_item)
    items: list[ImportItem] = []
    for start in range(0, len(body), chunk):
        items += splitter.feed(body[start : start + chunk])
    return items + splitter.finish()


def _texts(items: list[ImportItem]) -> list[object]:
    return [json.loads(item.text) if item.text is not None else None for item in items]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 100_000])
def test_json_array_elements_come_out_whole_whatever_the_chunking(chunk: int) -> None:
    body = json.dumps(ENROLLMENTS, ensure_ascii=False, indent=2).encode()
    items = _split(body, chunk)
    assert _texts(items) == ENROLLMENTS
    assert [item.number for item in items] == [1, 2, 3, 4]


@pytest.mark.parametrize("chunk", [1, 5, 100_000])
def test_json_lines_come_out_whole_with_their_line_numbers(chunk: int) -> None:
    lines = [json.dumps(e, ensure_ascii=False) for e in ENROLLMENTS]
    body = ("\n".join([lines[0], "", lines[1], lines[2] + "\r", lines[3]]) + "\n").encode()
    items = _split(body, chunk)
    assert _texts(items) == ENROLLMENTS
    assert [item.number for item in items] == [1, 3, 4, 5]


def test_last_json_line_without_newline_is_kept() -> None:
    assert _texts(_split(b'{"a": 1}\n{"b": 2}', 4)) == [{"a": 1}, {"b": 2}]


def test_leading_blanks_before_the_array_are_ignored() -> None:
    assert _texts(_split(b'  \n\t [ {"a": 1} ] \n', 1)) == [{"a": 1}]


def test_empty_array_and_empty_body_give_no_items() -> None:
    assert _split(b"[]", 1) == []
    assert _split(b" [ ] ", 1) == []
    assert _split(b"", 1) == []
    assert _split(b"\n\n", 1) == []


def test_item_longer_than_the_limit_is_reported_without_its_text() -> None:
    big = json.dumps({"registrationId": "x" * 500}).encode()
    small = b'{"registrationId": "ok"}'
    array = _split(b"[" + big + b"," + small + b"]", 16, max_item=100)
    assert [(i.number, i.text is None) for i in array] == [(1, True), (2, False)]
    lines = _split(big + b"\n" + small + b"\n", 16, max_item=100)
    assert [(i.number, i.text is None) for i in lines] == [(1, True), (2, False)]


def test_unclosed_array_is_malformed_at_the_next_element() -> None:
    splitter = ImportSplitter(1000)
    assert len(splitter.feed(b'[{"a": 1}, {"b": ')) == 1
    with pytest.raises(MalformedImport) as raised:
        splitter.finish()
    assert raised.value.number == 2


@pytest.mark.parametrize(
    "body", [b'[{"a": 1},,{"b": 2}]', b'[{"a": 1},]', b'[{"a": 1}] x', b'[{"a": 1}}]']
)
def test_broken_array_structure_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedImport):
        _split(body, 3)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.dictionaries(
            st.text(max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3)
                ),
                max_leaves=6,
            ),
            max_size=4,
        ),
        max_size=6,
    ),
    chunk=st.integers(min_value=1, max_value=40),
    as_array=st.booleans(),
)
def test_any_json_objects_survive_any_chunking(
    items: list[dict[str, object]], chunk: int, as_array: bool
) -> None:
    if as_array:
        body = json.dumps(items, ensure_ascii=False).encode()
    else:
        body = "\n".join(json.dumps(item, ensure_ascii=False) for item in items).encode()
    assert _texts(_split(body, chunk)) == items
