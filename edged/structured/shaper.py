"""From a request to its output plan, and from generated text to the answer: content or tool calls,
validated with a real JSON Schema validator before the final event (a failure is a bug: `internal`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from edged.engines.textstream import TextStream
from edged.errors import InternalError
from edged.messages import TokenEvent
from edged.structured.grammar import NO_PARAMETERS, TOOL_CLOSE, TOOL_OPEN, json_grammar, tool_grammar
from edged.structured.wire import JsonObjectFormat, JsonSchemaFormat, NamedToolChoice, Tool

if TYPE_CHECKING:
    from edged.messages import ChatRequest

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class OutputPlan:
    kind: str  # "text", "json" or "tools"
    grammar: str | None = None
    schema: dict[str, Any] | None = None  # json: what the answer must validate against
    prompt_tools: tuple[Tool, ...] = ()  # described to the model
    callable: tuple[Tool, ...] = ()  # the grammar allows calls to these
    forced: bool = False
    stops: tuple[str, ...] = ()

    def engine_stops(self) -> tuple[str, ...]:
        # A stop string inside constrained JSON would cut it; text answers in `auto` end on a stop
        # through the grammar instead, and the shaper cuts it off.
        return self.stops if self.kind == "text" else ()


def plan_for(request: "ChatRequest") -> OutputPlan:
    stops = request.stop_list()
    tools = tuple(request.tools or ())
    choice = request.tool_choice or ("auto" if tools else "none")
    if tools and choice != "none":
        if isinstance(choice, NamedToolChoice):
            callable_ = tuple(t for t in tools if t.function.name == choice.function.name)
        else:
            callable_ = tools
        forced = choice != "auto"
        return OutputPlan("tools", tool_grammar(list(callable_), forced, stops), None, tools, callable_, forced,
                          stops)
    fmt = request.response_format
    if isinstance(fmt, JsonObjectFormat):
        return OutputPlan("json", json_grammar(None), {"type": "object"}, stops=stops)
    if isinstance(fmt, JsonSchemaFormat):
        schema = fmt.json_schema.schema_
        return OutputPlan("json", json_grammar(schema), schema, stops=stops)
    return OutputPlan("text", stops=stops)


@dataclass
class Outcome:
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    tail: list[TokenEvent] = field(default_factory=list)  # stream events to send before the final one


def _check(schema: dict[str, Any], value: Any, what: str) -> None:
    from jsonschema import Draft202012Validator

    error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
    if error is not None:
        # The grammar should make this impossible: log where and which keyword, never the values.
        at = "/" + "/".join(str(p) for p in error.absolute_path)
        logger.error("constrained output failed validation", what=what, at=at, keyword=error.validator)
        raise InternalError(f"the {what} failed its schema at {at} ({error.validator}); this is a bug in "
                            "edged, please report it")


class Shaper:
    """Turns the engine's text pieces into stream events and, at the end, the validated answer."""

    def __init__(self, plan: OutputPlan) -> None:
        self._event = TokenEvent
        self.plan = plan
        self._text: list[str] = []
        self._branch = "text" if plan.kind != "tools" else ("call" if plan.forced else "")
        self._visible = TextStream(plan.stops if plan.kind == "tools" else ())
        self._shown: list[str] = []  # content after stop handling
        self._call_id = "call_" + os.urandom(12).hex()
        self._head: int | None = None  # offset of the arguments in the text, once the name is out
        self._sent_args = 0

    def feed(self, text: str) -> list[TokenEvent]:
        self._text.append(text)
        if self.plan.kind != "tools":
            self._shown.append(text)
            return [self._event(text)]
        whole = "".join(self._text)
        if not self._branch:
            if whole.startswith(TOOL_OPEN):
                self._branch = "call"
            elif TOOL_OPEN.startswith(whole):
                return []  # could still become a call
            else:
                self._branch = "text"
                text = whole
        if self._branch == "text":
            out = self._visible.feed(text.encode())
            self._shown.append(out)
            return [self._event(out)] if out else []
        return self._call_deltas(whole, final=False)

    def _call_deltas(self, whole: str, final: bool) -> list[TokenEvent]:
        events = []
        if self._head is None:
            for tool in self.plan.callable:
                head = f'{TOOL_OPEN}{{"name": "{tool.function.name}", "arguments": '
                if whole.startswith(head):
                    self._head = len(head)
                    events.append(self._event("", [{"index": 0, "id": self._call_id, "type": "function",
                                                    "function": {"name": tool.function.name, "arguments": ""}}]))
                    break
            else:
                return events
        # The call ends with "}" and the closing tag: hold those back until the end.
        end = len(whole) if final else max(self._head, len(whole) - len("}" + TOOL_CLOSE))
        args = whole[self._head + self._sent_args:end]
        if final and args.endswith("}" + TOOL_CLOSE):
            args = args[:-len("}" + TOOL_CLOSE)]
        if args:
            self._sent_args += len(args)
            events.append(self._event("", [{"index": 0, "function": {"arguments": args}}]))
        return events

    def finish(self, finish_reason: str) -> Outcome:
        whole = "".join(self._text)
        plan = self.plan
        if plan.kind == "text":
            return Outcome(whole, None, finish_reason)
        if plan.kind == "json":
            if finish_reason == "stop":  # cut by max_tokens ("length") it is a prefix, as OpenAI's
                try:
                    value = json.loads(whole)
                except json.JSONDecodeError:
                    logger.error("constrained output is not JSON", chars=len(whole))
                    raise InternalError("the JSON answer does not parse; this is a bug in edged, "
                                        "please report it") from None
                _check(plan.schema or {"type": "object"}, value, "JSON answer")
            return Outcome(whole, None, finish_reason)
        if self._branch != "call":
            tail = self._visible.flush()
            self._shown.append(tail)
            events = [self._event(tail)] if tail else []
            return Outcome("".join(self._shown), None, finish_reason, events)
        events = self._call_deltas(whole, final=True) if self._head is not None else []
        if finish_reason != "stop":  # cut by max_tokens: what there is, unvalidated, like OpenAI's
            calls = self._calls(whole[self._head:] if self._head is not None else "", None)
            return Outcome(None, calls, finish_reason, events)
        name, arguments = self._parse_call(whole)
        return Outcome(None, self._calls(arguments, name), "tool_calls", events)

    def _calls(self, arguments: str, name: str | None) -> list[dict[str, Any]] | None:
        if self._head is None:
            return None
        if name is None:
            name = next(t.function.name for t in self.plan.callable
                        if "".join(self._text).startswith(f'{TOOL_OPEN}{{"name": "{t.function.name}"'))
            arguments = arguments.removesuffix("}" + TOOL_CLOSE)
        return [{"id": self._call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]

    def _parse_call(self, whole: str) -> tuple[str, str]:
        body = whole.removeprefix(TOOL_OPEN).removesuffix(TOOL_CLOSE)
        try:
            call = json.loads(body)
            name, arguments = call["name"], call["arguments"]
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.error("constrained tool call does not parse", chars=len(whole))
            raise InternalError("the tool call does not parse; this is a bug in edged, please report it") from None
        tool = next((t for t in self.plan.callable if t.function.name == name), None)
        if tool is None:
            raise InternalError(f"the model called {name!r}, which the grammar forbids; this is a bug in edged")
        _check(tool.function.parameters or NO_PARAMETERS, arguments, f"arguments of {name}")
        assert self._head is not None
        return name, whole[self._head:len(whole) - len("}" + TOOL_CLOSE)]
