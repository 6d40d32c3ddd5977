"""Client side of structured output: request fields from files or values, and answers from events.

`edged.clients.socket` re-exports these; `edged ask --json-schema/--tool` uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edged.atomic import read_bounded
from edged.errors import BadRequest, ConfigError
from edged.jsonbody import load_json
from edged.structured.schema import MAX_SCHEMA_BYTES

CHOICES = ("none", "auto", "required")


def json_schema_format(schema: dict[str, Any], name: str = "answer") -> dict[str, Any]:
    """A `response_format` asking for JSON that validates against `schema`."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def function_tool(name: str, parameters: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "parameters": parameters}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}


def tool_choice(name: str) -> str | dict[str, Any]:
    """`none`, `auto`, `required`, or the named tool."""
    return name if name in CHOICES else {"type": "function", "function": {"name": name}}


def _read_json(path: Path, what: str) -> Any:
    try:
        data = read_bounded(path, MAX_SCHEMA_BYTES * 2)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_SCHEMA_BYTES * 2:
        raise ConfigError(f"{path} is larger than {MAX_SCHEMA_BYTES * 2} bytes")
    try:  # as a request body is parsed: nesting too deep or a 5,000-digit number is an error, not a crash
        return load_json(data, str(path))
    except BadRequest as exc:
        raise ConfigError(exc.message) from None


def schema_format_from_file(path: Path) -> dict[str, Any]:
    """`--json-schema FILE`: the file is a JSON Schema; its name is the file's stem."""
    schema = _read_json(path, "JSON schema")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)[:64] or "answer"
    return json_schema_format(schema, name)


def tools_from_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """`--tool FILE`: each file holds one OpenAI tool object, a list of them, or a bare function
    (`{"name", "description", "parameters"}`)."""
    tools: list[dict[str, Any]] = []
    for path in paths:
        data = _read_json(path, "tool file")
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict):
                raise ConfigError(f"{path}: a tool must be a JSON object")
            tools.append(item if "function" in item else {"type": "function", "function": item})
    return tools


@dataclass
class Answer:
    """A whole answer put together from streamed chunks or one `chat.completion` object."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    final: dict[str, Any] = field(default_factory=dict)

    def add(self, event: dict[str, Any]) -> None:
        for choice in event.get("choices", []):
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            message = choice.get("delta") or choice.get("message") or {}
            self.content += message.get("content") or ""
            for piece in message.get("tool_calls") or ():
                self._add_call(piece)
        if "edged" in event:
            self.final = event

    def _add_call(self, piece: dict[str, Any]) -> None:
        index = piece.get("index", len(self.tool_calls))
        while len(self.tool_calls) <= index:
            self.tool_calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call = self.tool_calls[index]
        call["id"] = piece.get("id") or call["id"]
        function = piece.get("function", {})
        call["function"]["name"] = function.get("name") or call["function"]["name"]
        call["function"]["arguments"] += function.get("arguments") or ""


def answer_of(events: Iterable[dict[str, Any]]) -> Answer:
    answer = Answer()
    for event in events:
        answer.add(event)
    return answer
