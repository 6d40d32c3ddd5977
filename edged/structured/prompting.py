"""Tools and tool turns in the prompt: through the model's chat template when it knows tools, else one
documented fallback (docs/protocol.md, "Tools"), which any template can render as plain turns."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Sequence

from edged.structured.grammar import TOOL_CLOSE, TOOL_OPEN

if TYPE_CHECKING:
    from edged.messages import ChatMessage
    from edged.structured.wire import Tool

FALLBACK_INSTRUCTIONS = (
    "You can call functions. To call one, answer with only\n"
    f"{TOOL_OPEN}{{\"name\": <function name>, \"arguments\": <JSON object>}}{TOOL_CLOSE}\n"
    "The functions you can call:\n"
)


def template_knows_tools(template: str) -> bool:
    """Hugging Face tool-aware templates read a `tools` variable; ones that do not would drop them."""
    return "tools" in template and "tool_call" in template


def _tool_spec(tool: "Tool") -> dict[str, Any]:
    spec: dict[str, Any] = {"name": tool.function.name}
    if tool.function.description:
        spec["description"] = tool.function.description
    spec["parameters"] = tool.function.parameters or {"type": "object", "properties": {}}
    return spec


def _call_text(name: str, arguments: str) -> str:
    return f'{TOOL_OPEN}{{"name": {json.dumps(name)}, "arguments": {arguments}}}{TOOL_CLOSE}'


def native_context(messages: Sequence["ChatMessage"], tools: Sequence["Tool"]) -> dict[str, Any]:
    """Template variables for a tool-aware template: OpenAI's message shape, arguments as objects."""
    out = []
    for message in messages:
        item = message.model_dump(exclude_none=True)
        if message.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": json.loads(c.function.arguments)}}
                for c in message.tool_calls]
        item.setdefault("content", "")
        out.append(item)
    context: dict[str, Any] = {"messages": out}
    if tools:
        context["tools"] = [{"type": "function", "function": _tool_spec(t)} for t in tools]
    return context


def fallback_context(messages: Sequence["ChatMessage"], tools: Sequence["Tool"]) -> dict[str, Any]:
    """Plain system/user/assistant turns: tools described in the system turn, calls and results as text."""
    names = {c.id: c.function.name for m in messages for c in m.tool_calls or ()}
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            result = {"name": names.get(message.tool_call_id or "", ""), "content": message.content or ""}
            out.append({"role": "user", "content": f"<tool_response>\n{json.dumps(result)}\n</tool_response>"})
        elif message.tool_calls:
            calls = "\n".join(_call_text(c.function.name, c.function.arguments) for c in message.tool_calls)
            text = f"{message.content}\n{calls}" if message.content else calls
            out.append({"role": "assistant", "content": text})
        else:
            out.append({"role": message.role, "content": message.content or ""})
    if tools:
        described = FALLBACK_INSTRUCTIONS + "\n".join(json.dumps(_tool_spec(t)) for t in tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{described}"}
        else:
            out.insert(0, {"role": "system", "content": described})
    return {"messages": out}


def chat_context(template: str, messages: Sequence["ChatMessage"], tools: Sequence["Tool"]) -> dict[str, Any]:
    """The variables to render `messages` (and `tools`) with `template`."""
    uses_tools = bool(tools) or any(m.tool_calls or m.role == "tool" for m in messages)
    if not uses_tools:
        return {"messages": [{"role": m.role, "content": m.content or ""} for m in messages]}
    if template_knows_tools(template):
        return native_context(messages, tools)
    return fallback_context(messages, tools)
