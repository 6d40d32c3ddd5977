"""Request-level checks of structured output and tools that pydantic's field types cannot express."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edged.errors import BadRequest
from edged.jsonbody import load_json
from edged.structured.schema import check_schema
from edged.structured.wire import JsonObjectFormat, JsonSchemaFormat, NamedToolChoice

if TYPE_CHECKING:
    from edged.messages import ChatRequest


def check_request(request: "ChatRequest") -> None:
    """Raise BadRequest naming the field for any structured-output or tool field edged cannot honour."""
    fmt = request.response_format
    if isinstance(fmt, JsonSchemaFormat):
        check_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")
    tools = request.tools or []
    names: set[str] = set()
    for index, tool in enumerate(tools):
        name = tool.function.name
        if name in names:
            raise BadRequest(f"`tools[{index}].function.name`: {name!r} is given twice; tool names must be unique")
        names.add(name)
        parameters = tool.function.parameters
        if parameters is not None:
            check_schema(parameters, f"tools[{index}].function.parameters")
            if parameters.get("type", "object") != "object":
                raise BadRequest(f"`tools[{index}].function.parameters` must describe an object "
                                 "(\"type\": \"object\"): arguments are a JSON object")
    choice = request.tool_choice
    if choice is not None and not tools and choice != "none":
        raise BadRequest("`tool_choice` needs `tools`")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise BadRequest(f"`tool_choice.function.name`: {choice.function.name!r} is not one of `tools`")
    if tools and choice != "none" and isinstance(fmt, (JsonObjectFormat, JsonSchemaFormat)):
        raise BadRequest("`response_format` JSON modes cannot be combined with `tools` unless "
                         "`tool_choice` is \"none\"; ask for one or the other")
    if request.prompt is not None and tools:
        raise BadRequest("`tools` need `messages` (a raw `prompt` has no place for tool descriptions)")
    _check_conversation(request)
    check_grammar(request)


def _check_conversation(request: "ChatRequest") -> None:
    seen: set[str] = set()
    for i, message in enumerate(request.messages or ()):
        for j, call in enumerate(message.tool_calls or ()):
            where = f"messages[{i}].tool_calls[{j}]"
            if call.id in seen:
                raise BadRequest(f"`{where}.id`: {call.id!r} is used by an earlier tool call")
            seen.add(call.id)
            arguments = load_json(call.function.arguments, f"`{where}.function.arguments`")
            if not isinstance(arguments, dict):
                raise BadRequest(f"`{where}.function.arguments` must be a JSON object")
        if message.role == "tool" and message.tool_call_id not in seen:
            raise BadRequest(f"`messages[{i}].tool_call_id`: {message.tool_call_id!r} matches no tool call "
                             "of an earlier assistant message")


def check_grammar(request: "ChatRequest") -> None:
    """Build the request's grammar once without a tokenizer, so an unenforceable schema fails at parse time."""
    from edged.structured.grammar import validate
    from edged.structured.shaper import plan_for

    grammar = plan_for(request).grammar
    if grammar is not None:
        validate(grammar)
