"""JSON from a client, where every way it can fail is a BadRequest (never a RecursionError or a traceback)."""

from __future__ import annotations

import json
from typing import Any

from edged.errors import BadRequest


def load_json(data: bytes | str, what: str) -> Any:
    """Parse ``data``; BadRequest for invalid UTF-8 or JSON, nesting too deep, or an integer over 4300 digits."""
    try:
        return json.loads(data)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not valid UTF-8") from None
    except ValueError as exc:  # Python's limit on integer digits: a number no request needs
        raise BadRequest(f"{what} is not acceptable JSON: {str(exc)[:100]}") from None


def json_object_or_none(data: bytes | str) -> dict[str, Any] | None:
    """A JSON object, or None for anything else: broken, nested too deeply, a 5,000-digit integer or not
    an object. For messages anyone may publish (device statuses), which are skipped, never refused."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
