"""One line for a pydantic validation error, the same everywhere it is shown: the `reason` header of
`webhooks.invalid`, a rejected line of `hookfleet publish`, a CLI error."""

from __future__ import annotations

from pydantic import ValidationError

REASON_MAX = 200
"""Characters at most: the line goes into a Kafka header and a terminal, so it stays small."""


def first_error(exc: ValidationError) -> str:
    """`field: message` of the first error (`value` when the whole input is wrong), with how many more.

    Never echoes the input: a payload may carry customer data or secrets, and a header is no place for it.
    """
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "value"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"[:REASON_MAX]
