"""Typed requests and events shared by every transport: the OpenAI Chat Completions subset of e2e-v1 §5."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from edged.validation import StrictModel, describe_validation_error
from edged.errors import BadRequest
from edged.jsonbody import load_json
from edged.summary import RequestSummary
from edged.structured.wire import ResponseFormat, ToolCall, Tool, ToolChoice

Priority = Literal["interactive", "normal", "background"]
PRIORITY_RANK: dict[str, int] = {"interactive": 0, "normal": 1, "background": 2}


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = Field(None, max_length=1_000_000)
    # An assistant turn that called tools, and a tool's answer to one of those calls (docs/protocol.md).
    tool_calls: list[ToolCall] | None = Field(None, min_length=1, max_length=16)
    tool_call_id: str | None = Field(None, min_length=1, max_length=64)
    name: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _shape(self) -> "ChatMessage":
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only `assistant` messages carry `tool_calls`")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("`tool` messages, and only they, need `tool_call_id`")
        if self.content is None and self.tool_calls is None:
            raise ValueError("`content` is required (an assistant message may give `tool_calls` instead)")
        return self

    def chars(self) -> int:
        calls = sum(len(c.function.arguments) + len(c.function.name) for c in self.tool_calls or ())
        return len(self.content or "") + calls


class ChatRequest(StrictModel):
    """A request body. Unknown fields are rejected, never ignored."""

    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=256)
    prompt: str | None = Field(None, max_length=1_000_000)
    model: str | None = Field(None, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stream: bool = False
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, min_length=1, max_length=32)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = Field(None, description="accepted; edged makes at most one call per answer")
    priority: Priority = "normal"
    deadline_ms: int | None = Field(None, ge=1)
    pad: str | None = Field(None, max_length=1_000_000, description="length-hiding padding; ignored")

    @model_validator(mode="after")
    def _one_input(self) -> "ChatRequest":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 or any(not s or len(s) > 64 for s in stops):
            raise ValueError("`stop`: at most 4 strings of 1 to 64 characters")
        return self

    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def prompt_chars(self) -> int:
        if self.prompt is not None:
            return len(self.prompt)
        return sum(m.chars() for m in self.messages or ())


def parse_request(body: bytes) -> ChatRequest:
    """Parse a JSON request body; every failure is a BadRequest that says which field is wrong."""
    data = load_json(body, "request body")
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc, "request", separator="; ")) from None
    from edged.structured.checks import check_request

    check_request(request)  # schemas, tool names and call ids: BadRequest naming the field
    return request


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_wire(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


@dataclass
class TokenEvent:
    text: str
    tool_calls: list[dict[str, Any]] | None = None  # a streamed piece of a tool call, in OpenAI's delta shape


@dataclass
class FinalEvent:
    """The answer's end; its usage and `edged` statistics render from the request's one summary."""

    summary: RequestSummary
    text: str = ""  # for stream=false: the whole answer
    tool_calls: list[dict[str, Any]] | None = None  # for stream=false: the calls, when the answer is tool calls

    @property
    def finish_reason(self) -> str:
        return self.summary.finish_reason or "stop"

    @property
    def usage(self) -> Usage:
        return Usage(self.summary.input_tokens, self.summary.output_tokens)

    @property
    def stats(self) -> RequestSummary:
        return self.summary


@dataclass
class ErrorEvent:
    code: str
    message: str


Event = TokenEvent | FinalEvent | ErrorEvent


@dataclass
class Completion:
    """Renders events as OpenAI objects for one request."""

    request_id: str
    model: str
    created: int
    stream: bool
    pieces: list[str] = field(default_factory=list)

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{self.request_id}", "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        delta: dict[str, Any] = {"tool_calls": tool_calls} if tool_calls else {"content": text}
        return {**self._base("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}

    def final(self, event: FinalEvent) -> dict[str, Any]:
        if self.stream:
            out = {**self._base("chat.completion.chunk"),
                   "choices": [{"index": 0, "delta": {}, "finish_reason": event.finish_reason}]}
        else:
            message: dict[str, Any] = {"role": "assistant", "content": event.text}
            if event.tool_calls:
                message = {"role": "assistant", "content": None, "tool_calls": event.tool_calls}
            out = {**self._base("chat.completion"),
                   "choices": [{"index": 0, "message": message, "finish_reason": event.finish_reason}]}
        out["usage"] = event.usage.to_wire()
        out["edged"] = event.summary.edged_object()
        return out


