"""One grammar per request, in llguidance's Lark dialect, for both engines; compiled grammars are cached.

Why llguidance (docs/performance.md): one token-level mask serves the GGUF and the ONNX engine
alike, it ships abi3 wheels for aarch64 and x86_64, compiles a 10-property schema in about a
millisecond and costs well under a millisecond per token, where llama.cpp's own grammar sampler cost
7-11 ms per token on the same schema and model (quick timings on a busy machine: relative only).

JSON is generated compact but readable (", " and ": ", no other whitespace): a small model given free
whitespace can spend its whole budget on newlines. A tool call is the Hermes/Qwen format most small
models are trained on: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from edged.errors import BadRequest

if TYPE_CHECKING:
    from edged.structured.wire import Tool

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
TOOL_OPEN, TOOL_CLOSE = "<tool_call>\n", "\n</tool_call>"
ANY_OBJECT: dict[str, Any] = {"type": "object"}
# OpenAI: "omitting parameters defines a function with an empty parameter list"; its arguments are {}.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
CACHE_SIZE = 32
# What a schema leaves open, a small model fills until max_tokens: digits ("3.1111..." for a number
# from 3 to 4, "1234567890000..." for a population) and properties it invents (pydantic's schemas and
# many clients' leave `additionalProperties` out). Measured on the demo model, most such answers were
# cut by max_tokens and did not parse. So the grammar enforces a subset of the schema: numbers with at
# most 6 decimals and below 10^15 in magnitude where the schema gives no bound, and an object with
# `properties` but no `additionalProperties` only those properties. The answer is still validated
# against the schema as given; `"additionalProperties": true` (or a schema) lets the model add more.
NUMBER_STEP = 1e-6
MAGNITUDE = 10**15


def _bound_number(out: dict[str, Any], types: list[str]) -> None:
    low = out.get("minimum", out.get("exclusiveMinimum"))
    high = out.get("maximum", out.get("exclusiveMaximum"))
    if high is None and (low is None or low < MAGNITUDE):
        out["maximum"] = MAGNITUDE
    if low is None and (high is None or high > -MAGNITUDE):
        out["minimum"] = -MAGNITUDE
    if "number" in types:
        out["multipleOf"] = NUMBER_STEP


def generation_schema(schema: Any) -> Any:
    """A copy of `schema` that the grammar can only satisfy with output of bounded length (see above)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: generation_schema(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties"):
        if key in out:
            out[key] = generation_schema(out[key])
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = [generation_schema(sub) for sub in out["anyOf"]]
    types = out.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if ("number" in types or "integer" in types) and "enum" not in out and "const" not in out:
        _bound_number(out, types)
    properties = out.get("properties")
    # Not where a sibling `anyOf` or `$ref` may declare more properties: closing would refuse them.
    if isinstance(properties, dict) and not {"additionalProperties", "anyOf", "$ref"} & set(out) and \
            set(out.get("required") or ()) <= set(properties):
        out["additionalProperties"] = False
    return out


def _json_rule(schema: dict[str, Any] | None) -> str:
    return "%json " + json.dumps({**generation_schema(schema or ANY_OBJECT), "x-guidance": JSON_OPTIONS})


def _regex_literal(text: str) -> str:
    """`text` as a Rust-regex fragment that matches it literally (safe inside Lark's /.../)."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):X}}}" for c in text)


def json_grammar(schema: dict[str, Any] | None) -> str:
    return f"start: {_json_rule(schema)}\n"


def tool_grammar(tools: "list[Tool]", forced: bool, stops: tuple[str, ...] = ()) -> str:
    """A call to one of `tools`; unless `forced`, plain text is allowed instead (which may end in a stop)."""
    lines = [f"call_block: {json.dumps(TOOL_OPEN)} call {json.dumps(TOOL_CLOSE)}",
             "call: " + " | ".join(f"call_{i}" for i in range(len(tools)))]
    for i, tool in enumerate(tools):
        head = json.dumps(f'{{"name": "{tool.function.name}", "arguments": ')
        lines.append(f'call_{i}: {head} args_{i} "}}"')
        lines.append(f"args_{i}: {_json_rule(tool.function.parameters or NO_PARAMETERS)}")
    if forced:
        return "start: call_block\n" + "\n".join(lines) + "\n"
    # A text answer may not begin like a call, and a stop sequence can only end it: the engine then
    # ends at once (the grammar allows nothing after it) and the shaper cuts the stop off.
    text = r"TEXT: /(?s:.+)/ & ~/(?s:[ \t\r\n]*<tool_call>.*)/"
    if stops:
        text += " & ~/(?s:.*(" + "|".join(_regex_literal(s) for s in stops) + ").+)/"
    return "start: TEXT | call_block\n" + text + "\n" + "\n".join(lines) + "\n"


@lru_cache(maxsize=CACHE_SIZE)
def validate(grammar: str) -> None:
    """Raise BadRequest if llguidance cannot build `grammar` (e.g. a schema no value can satisfy)."""
    from llguidance import LLMatcher

    error = LLMatcher.validate_grammar(grammar)
    if error and not error.startswith("WARNING"):
        raise unenforceable(error)


def unenforceable(error: str) -> BadRequest:
    hint = (" (edged generates numbers with at most 6 decimals: see docs/protocol.md)"
            if f"multiple of {NUMBER_STEP:f}" in error else "")
    return BadRequest(f"the schema cannot be enforced: {error[:300]}{hint}")


@dataclass
class _Entry:
    matcher: Any


class GrammarCache:
    """Compiled grammars for one tokenizer, least recently used dropped first; hands out fresh copies."""

    def __init__(self, tokenizer: Any, size: int = CACHE_SIZE) -> None:
        self._tokenizer = tokenizer
        self._size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.compiled = 0  # how many grammars were built, for tests and the benchmark

    def matcher(self, grammar: str) -> Any:
        from llguidance import LLMatcher

        entry = self._entries.get(grammar)
        if entry is None:
            matcher = LLMatcher(self._tokenizer, grammar, log_level=0)
            if matcher.is_error():
                raise unenforceable(matcher.get_error())
            entry = self._entries[grammar] = _Entry(matcher)
            self.compiled += 1
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(grammar)
        return entry.matcher.deep_copy()
