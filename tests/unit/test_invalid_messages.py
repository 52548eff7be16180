"""The one reason line and the one `webhooks.invalid` message shape every role writes."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from hookfleet.stream.diversion import invalid_message
from schemas.validation import REASON_MAX, first_error


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    nested: dict[str, int] = {}


def _error(raw: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Shape.model_validate_json(raw)
    return caught.value


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ('{"name": 1}', "name: Input should be a valid string"),
        ('{"name": "a", "nested": {"k": "x"}}', "nested.k: Input should be a valid integer"),
        ('{"nested": {}, "colour": "red"}', "name: Field required (+1 more)"),
        ("[1", "value: Invalid JSON: EOF while parsing a list at line 1 column 2"),
    ],
)
def test_first_error_is_field_colon_message(raw: str, line: str) -> None:
    assert first_error(_error(raw)) == line


def test_first_error_never_echoes_the_input_and_stays_short() -> None:
    line = first_error(_error('{"name": "s3cr3t", "' + "x" * 500 + '": 1}'))
    assert "s3cr3t" not in line
    assert len(line) <= REASON_MAX


def test_invalid_message_keeps_value_and_key_and_names_its_source() -> None:
    value, key, headers = invalid_message(
        b"\x00raw", b"acct_1", "value: Invalid JSON", ("t.webhooks.events", 4), 17, "dispatcher"
    )
    assert (value, key) == (b"\x00raw", b"acct_1")
    assert headers == [
        ("reason", b"value: Invalid JSON"),
        ("source_topic", b"t.webhooks.events"),
        ("source_partition", b"4"),
        ("source_offset", b"17"),
        ("role", b"dispatcher"),
    ]


def test_invalid_message_of_an_empty_value_is_empty_bytes_and_the_reason_is_bounded() -> None:
    value, key, headers = invalid_message(None, None, "r" * 500, ("t", 0), 0, "recorder")
    assert (value, key) == (b"", None)
    assert headers[0] == ("reason", b"r" * REASON_MAX)
