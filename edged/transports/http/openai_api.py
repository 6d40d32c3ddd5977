"""POST /v1/chat/completions, POST /v1/completions, GET /v1/models: OpenAI JSON to core requests and back."""

from __future__ import annotations

import json
import time
from urllib.parse import unquote
from typing import Any, Callable, Final, Protocol

from edged.errors import BadRequest
from edged.job import Job
from edged.messages import ChatRequest, parse_request
from edged.transports.http.auth import CALLER
from edged.transports.http.errors import Response, error_body, error_response, json_response
from edged.transports.http.request import HttpRequest
from edged.transports.http.sse import SseStream
from edged.transports.relay import relay_events

TRANSPORT: Final = "http"
MODEL_PREFIX: Final = "/v1/models/"
# OpenAI fields that SDKs send and that mean nothing different here; anything else unknown is refused.
TOLERATED: Final = ("n", "user", "stream_options")


class Submit(Protocol):
    def __call__(self, request: ChatRequest, *, transport: str, peer: str, client: str | None = None,
                 request_id: str | None = None) -> Job: ...


def parse_openai_body(body: bytes) -> ChatRequest:
    """The frame socket's request model (parse_request), after dropping the tolerated OpenAI extras."""
    if any(f'"{name}"'.encode() in body for name in TOLERATED):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # invalid, too deep, or a 5,000-digit integer
            data = None  # parse_request says what is wrong
        if isinstance(data, dict) and any(name in data for name in TOLERATED):
            if data.pop("n", 1) != 1:
                raise BadRequest("`n`: only 1 choice per request is offered")
            if not isinstance(data.pop("user", ""), str):
                raise BadRequest("`user`: must be a string")
            options = data.pop("stream_options", None)
            if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
                raise BadRequest("`stream_options`: only include_usage is known (usage is always on the last chunk)")
            body = json.dumps(data).encode()
    return parse_request(body)


def as_text_completion(obj: dict[str, Any]) -> dict[str, Any]:
    """A chat-shaped chunk or answer from the relay in the legacy /v1/completions shape."""
    if "error" in obj:
        return obj
    out = {**obj, "id": "cmpl-" + obj["id"].removeprefix("chatcmpl-"), "object": "text_completion"}
    choices = []
    for choice in obj["choices"]:
        text = (choice.get("delta") or {}).get("content") or (choice.get("message") or {}).get("content") or ""
        choices.append({"index": choice["index"], "text": text, "logprobs": None,
                        "finish_reason": choice["finish_reason"]})
    out["choices"] = choices
    return out


class OpenAIRoutes:
    def __init__(self, submit: Submit, model_name: Callable[[], str]) -> None:
        self._submit = submit
        self._model_name = model_name
        self._created = int(time.time())

    async def chat(self, request: HttpRequest) -> Response | None:
        chat = parse_openai_body(request.body)
        return await self._serve(request, chat, None)

    async def completions(self, request: HttpRequest) -> Response | None:
        chat = parse_openai_body(request.body)
        if chat.prompt is None:
            raise BadRequest("/v1/completions takes `prompt` (a string); send `messages` to /v1/chat/completions")
        return await self._serve(request, chat, as_text_completion)

    def _model_object(self) -> dict[str, Any]:
        return {"id": self._model_name(), "object": "model", "created": self._created, "owned_by": "edged"}

    async def models(self, request: HttpRequest) -> Response:
        return json_response({"object": "list", "data": [self._model_object()]})

    async def model(self, request: HttpRequest) -> Response:
        if unquote(request.path.removeprefix(MODEL_PREFIX)) != self._model_name():
            return error_response("not_found", f"this device serves {self._model_name()!r} only")
        return json_response(self._model_object())

    async def _serve(self, request: HttpRequest, chat: ChatRequest,
                     shape: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Response | None:
        caller = request.state[CALLER]
        job = self._submit(chat, transport=TRANSPORT, peer=caller.peer, client=caller.client)
        try:
            if chat.stream:
                return await self._stream(request, job, shape)
            return await self._whole(job, shape)
        finally:
            # The server cancels the handler when the client hangs up: stop at the next token.
            if not job.finished:
                job.cancel("client disconnected")

    async def _whole(self, job: Job, shape: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Response:
        answer: dict[str, Any] = {}

        async def keep(obj: dict[str, Any], final: bool, error: bool) -> None:
            answer.update(obj)

        await relay_events(job, self._model_name(), keep)
        if "error" in answer:
            return error_response(answer["error"]["code"], answer["error"]["message"])
        return json_response(shape(answer) if shape else answer)

    async def _stream(self, request: HttpRequest, job: Job,
                      shape: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Response | None:
        stream = SseStream(request)
        refused: dict[str, Any] = {}

        async def send(obj: dict[str, Any], final: bool, error: bool) -> None:
            if error and not stream.started:
                refused.update(obj)  # nothing sent yet: answer with a real HTTP error status
                return
            if error:
                obj = error_body(obj["error"]["code"], obj["error"]["message"])
            await stream.send(shape(obj) if shape else obj)

        await relay_events(job, self._model_name(), send)
        if refused:
            return error_response(refused["error"]["code"], refused["error"]["message"])
        await stream.finish()
        return None
