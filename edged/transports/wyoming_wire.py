"""Wyoming framing with bounds: one JSON header line, optional extra data and payload, each capped.

``wyoming.event.async_read_event`` trusts ``data_length`` and ``payload_length``, so a peer could make
the daemon buffer gigabytes; this reader checks both before reading, and says what was wrong.
Events are ``wyoming.event.Event`` objects, so the package's own classes parse and write them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event
from wyoming.info import Attribution, HandleModel, HandleProgram, Info

from edged import __version__
from edged.errors import BadRequest
from edged.jsonbody import load_json

MAX_HEADER_BYTES = 64 * 1024  # also the StreamReader limit, so readline() cannot grow past it
MAX_DATA_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024  # a handle server gets no audio; anything bigger is a wrong peer
MAX_TRANSCRIPT_CHARS = 8000


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"wyoming event: {key} must be a non-negative integer")
    if value > limit:
        raise BadRequest(f"wyoming event: {key} {value} is over the {limit}-byte limit")
    return value


def _object(raw: bytes, what: str) -> dict[str, Any]:
    # load_json: nesting too deep or a 5,000-digit integer is a BadRequest too, not a dropped connection
    value = load_json(raw, f"wyoming event: {what}")
    if not isinstance(value, dict):
        raise BadRequest(f"wyoming event: {what} must be a JSON object")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None at a clean end of stream; BadRequest for anything malformed or oversized."""
    try:
        line = await reader.readline()
    except ValueError:  # LimitOverrunError: no newline within the limit
        raise BadRequest(f"wyoming event header longer than {MAX_HEADER_BYTES} bytes") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise BadRequest("wyoming event header cut off by the end of the stream")
    header = _object(line, "header")
    kind = header.get("type")
    if not isinstance(kind, str) or not 0 < len(kind) <= 64:
        raise BadRequest("wyoming event: type must be a string of 1 to 64 characters")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise BadRequest("wyoming event: data must be a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    try:
        if data_length:
            data = {**data, **_object(await reader.readexactly(data_length), "data")}
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        raise BadRequest("wyoming event cut off by the end of the stream") from None
    return Event(type=kind, data=data, payload=payload)


def transcript_text(event: Event) -> str:
    text = event.data.get("text")
    if not isinstance(text, str):
        raise BadRequest("transcript: text must be a string")
    text = text.strip()
    if not text:
        raise BadRequest("the transcript is empty")
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise BadRequest(f"the transcript is longer than {MAX_TRANSCRIPT_CHARS} characters")
    return text


@dataclass(frozen=True)
class ModelFacts:
    """What `describe` says about the model; the daemon fills it from the loaded model."""

    name: str
    description: str
    version: str | None = None
    author: str = "unknown"
    url: str = ""


MAX_FACT_CHARS = 256  # a model file's metadata is the file author's text: bounded and printable only
MAX_URL_CHARS = 1024


def _fact(text: str, limit: int = MAX_FACT_CHARS) -> str:
    return "".join(c for c in text if c.isprintable()).strip()[:limit]


def model_facts(info: Any, fallback_name: str, release: str | None = None) -> ModelFacts:
    """From the worker's ModelInfo (None while the model is not loaded) and the signed release serving, if any.

    The version is the release (``stable v3``) when a signed update installed the model, else the one
    its file names; the attribution is the file's author or organization and its URL.
    """
    if info is None:
        return ModelFacts(name=_fact(fallback_name), description="a local language model (not loaded yet)",
                          version=release)
    size = f", {info.parameters / 1e6:.0f}M parameters" if info.parameters else ""
    return ModelFacts(name=_fact(info.name) or _fact(fallback_name),
                      description=f"{info.format.upper()} model{size}, served by edged",
                      version=release or _fact(info.version) or None, author=_fact(info.author) or "unknown",
                      url=_fact(info.url, MAX_URL_CHARS))


def info_event(model: ModelFacts, languages: list[str], streaming: bool) -> Event:
    edged = Attribution(name="edged", url="")
    handle_model = HandleModel(name=model.name, attribution=Attribution(name=model.author, url=model.url),
                               installed=True, description=model.description, version=model.version,
                               languages=list(languages))
    program = HandleProgram(name="edged", attribution=edged, installed=True,
                            description="edged: a local language model on this device", version=__version__,
                            models=[handle_model], supports_handled_streaming=streaming)
    return Info(handle=[program]).event()
