"""The grammars on a small byte-level vocabulary with random logits: whatever the model would prefer,
every answer parses and validates. Hypothesis draws schemas from the whole supported subset."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from edged.errors import BadRequest
from edged.messages import TokenEvent
from edged.structured.constraint import TokenMask, bytes_tokenizer
from edged.structured.grammar import MAGNITUDE, NUMBER_STEP, GrammarCache, generation_schema, json_grammar, tool_grammar
from edged.structured.schema import check_schema
from edged.structured.shaper import OutputPlan, Shaper
from edged.structured.wire import Tool

MERGED = [b'{"', b'": ', b", ", b'"}', b"true", b"false", b"null", b"<tool_call>", b"\n"]
EOS = 256 + len(MERGED)
PIECES = [bytes([b]) for b in range(256)] + MERGED + [b"<eos>"]


def _encode(text: str) -> list[int]:
    return list(text.encode())


@pytest.fixture(scope="module")
def cache() -> GrammarCache:
    return GrammarCache(bytes_tokenizer(PIECES, EOS, None, [EOS], _encode), size=4)


def generate(cache: GrammarCache, grammar: str, seed: int, limit: int = 4000, bias: dict | None = None) -> bytes:
    """Sample with random logits under the mask until the grammar ends (argmax of noise: any path)."""
    rng = np.random.default_rng(seed)
    mask = TokenMask(cache, grammar, len(PIECES))
    out = b""
    bias = {EOS: -2.0} if bias is None else bias  # by default the grammar, not luck, must end every answer
    for _ in range(limit):
        logits = rng.normal(size=len(PIECES)).astype(np.float32)
        for token, extra in bias.items():
            logits[token] += extra
        mask.apply(logits)
        token = int(np.argmax(logits))
        if token == EOS:
            return out
        mask.accept(token)
        out += PIECES[token]
        if mask.finished:
            return out
    raise AssertionError(f"no end after {limit} tokens: {out[:200]!r}")


def leaf(numbers: bool = True) -> st.SearchStrategy[dict]:
    def string(lo: int, extra: int) -> dict:
        return {"type": "string", "minLength": lo, "maxLength": lo + extra}

    def integer(lo: int, span: int) -> dict:
        return {"type": "integer", "minimum": lo, "maximum": lo + span}

    small = st.integers(0, 3)
    # A bounded number may still have endless decimals; a real model's greedy choice can take them.
    number = st.builds(lambda lo: {"type": "number", "minimum": lo, "maximum": lo + 10}, st.integers(-5, 5))
    return st.one_of(
        st.builds(string, small, small),
        st.builds(integer, st.integers(-50, 50), st.integers(0, 100)),
        st.just({"type": "boolean"}), st.just({"type": "null"}),
        number if numbers else st.just({"type": "integer", "minimum": 0, "maximum": 9}),
        st.lists(st.one_of(st.text("abc", max_size=3), st.integers(-9, 9)), min_size=1, max_size=4,
                 unique=True).map(lambda values: {"enum": values}),
        st.one_of(st.text("xyz", max_size=3), st.integers(0, 9), st.booleans()).map(lambda v: {"const": v}),
        st.builds(lambda s: {"type": ["string", "null"], "maxLength": s}, small),
    )


def extend(children: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    names = st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=1, max_size=4, unique=True)

    def obj(keys: list[str], subs: list[dict], required: list[bool], closed: bool) -> dict:
        props = dict(zip(keys, subs))
        need = [k for k, r in zip(keys, required) if r]
        out = {"type": "object", "properties": props, "required": need}
        return {**out, "additionalProperties": False} if closed else out

    def arr(item: dict, lo: int, extra: int) -> dict:
        return {"type": "array", "items": item, "minItems": lo, "maxItems": lo + extra}

    return st.one_of(
        st.builds(obj, names, st.lists(children, min_size=4, max_size=4), st.lists(st.booleans(), min_size=4,
                                                                                    max_size=4), st.booleans()),
        st.builds(arr, children, st.integers(0, 2), st.integers(0, 2)),
        st.lists(children, min_size=2, max_size=3).map(lambda subs: {"anyOf": subs}),
    )


def schemas(numbers: bool = True, max_leaves: int = 8) -> st.SearchStrategy[dict]:
    """Schemas anywhere in the documented subset, with every string, array and integer bounded."""
    return st.recursive(leaf(numbers), extend, max_leaves=max_leaves)


SCHEMAS = schemas()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=SCHEMAS, seed=st.integers(0, 2**32 - 1))
def test_any_schema_in_the_subset_yields_valid_json(cache, schema, seed):
    check_schema(schema, "schema")  # the strategy stays inside the documented subset
    try:
        text = generate(cache, json_grammar(schema), seed)
    except BadRequest as exc:  # only a schema no value satisfies may be refused
        assert "cannot be enforced" in exc.message
        return
    value = json.loads(text)
    Draft202012Validator(schema).validate(value)


def test_refs_and_defs(cache):
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/p"}, "b": {"$ref": "#/$defs/p"}},
              "required": ["a", "b"], "additionalProperties": False,
              "$defs": {"p": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 3}},
                              "required": ["x"], "additionalProperties": False}}}
    for seed in range(5):
        Draft202012Validator(schema).validate(json.loads(generate(cache, json_grammar(schema), seed)))


DIGITS = {ord(d): 4.0 for d in "0123456789"}  # noise that would rather write digits for ever


@pytest.mark.parametrize("schema", [
    {"type": "number"}, {"type": "integer"}, {"type": "number", "minimum": 3, "maximum": 4},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, {"type": ["integer", "null"], "minimum": 0},
    {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]},
])
def test_numbers_end_even_when_the_model_wants_more_digits(cache, schema):
    for seed in range(5):
        text = generate(cache, json_grammar(schema), seed, limit=200, bias=DIGITS)
        Draft202012Validator(schema).validate(json.loads(text))
        digits = text.split(b".")
        assert len(digits) == 1 or len(digits[1].rstrip(b"}")) <= 6


def test_objects_with_properties_generate_only_those_unless_the_schema_opens_them(cache):
    declared = {"type": "object", "properties": {"a": {"type": "boolean"}}}
    keys = MERGED.index(b'{"') + 256  # noise that would rather start another key
    for seed in range(5):
        value = json.loads(generate(cache, json_grammar(declared), seed, bias={keys: 3.0, ord(","): 3.0}))
        assert set(value) <= {"a"}
    opened = {**declared, "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9}}
    values = [json.loads(generate(cache, json_grammar(opened), seed)) for seed in range(10)]
    assert any(set(v) - {"a"} for v in values)
    for value in values:
        Draft202012Validator(opened).validate(value)


def test_the_generation_schema_is_a_bounded_copy():
    given = {"type": "object", "required": ["p"], "properties": {
        "p": {"type": "number", "minimum": 2},
        "q": {"type": "array", "items": {"anyOf": [{"type": "integer", "maximum": -MAGNITUDE * 2}, {"$ref": "#/$defs/d"}]}},
        "e": {"type": "number", "enum": [1.5, 2.25]}, "c": {"type": "integer", "const": 10**20}},
        "$defs": {"d": {"type": ["string", "number"], "exclusiveMaximum": 9}}}
    before = json.dumps(given)
    out = generation_schema(given)
    assert json.dumps(given) == before  # the request's schema, which validates the answer, is untouched
    assert out["properties"]["p"] == {"type": "number", "minimum": 2, "maximum": MAGNITUDE, "multipleOf": NUMBER_STEP}
    assert out["properties"]["q"]["items"]["anyOf"][0] == {"type": "integer", "maximum": -MAGNITUDE * 2}
    assert out["$defs"]["d"] == {"type": ["string", "number"], "exclusiveMaximum": 9, "minimum": -MAGNITUDE,
                                 "multipleOf": NUMBER_STEP}
    assert out["properties"]["e"] == given["properties"]["e"] and out["properties"]["c"] == given["properties"]["c"]
    assert out["additionalProperties"] is False and "additionalProperties" not in out["properties"]["q"]
    # A required property the object does not declare must stay possible, and explicit choices stay.
    assert "additionalProperties" not in generation_schema({"type": "object", "properties": {}, "required": ["x"]})
    assert generation_schema({"properties": {}, "additionalProperties": True})["additionalProperties"] is True
    branches = {"properties": {"a": {"type": "boolean"}}, "anyOf": [{"properties": {"b": {"const": 1}}, "required": ["b"]}]}
    assert "additionalProperties" not in generation_schema(branches)
    assert "additionalProperties" not in generation_schema({"properties": {}, "$ref": "#/$defs/x"})


def test_json_object_mode_gives_an_object(cache):
    for seed in range(5):
        value = json.loads(generate(cache, json_grammar(None), seed, limit=20_000))
        assert isinstance(value, dict)


def test_the_cache_is_bounded_and_reused(cache):
    before = cache.compiled
    grammars = [json_grammar({"const": i}) for i in range(6)]
    for grammar in grammars + grammars[-2:]:
        generate(cache, grammar, 0)
    assert cache.compiled == before + 6  # the last two were still cached
    assert len(cache._entries) == 4


def tool(name: str, properties: dict) -> Tool:
    return Tool.model_validate({"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}})


TOOLS = [tool("lamp", {"on": {"type": "boolean"}, "room": {"enum": ["hall", "kitchen"]}}),
         tool("thermostat", {"celsius": {"type": "integer", "minimum": 5, "maximum": 30}})]


TOOL_BODIES = [t.model_dump(exclude_none=True) for t in TOOLS]


def shaped(plan: OutputPlan, text: bytes, finish: str = "stop"):
    shaper = Shaper(plan)
    events = [e for i in range(len(text)) for e in shaper.feed(text[i:i + 1].decode("latin-1"))]
    outcome = shaper.finish(finish)
    return events + outcome.tail, outcome


@pytest.mark.parametrize("seed", range(8))
def test_forced_tool_calls_stream_and_validate(cache, seed):
    plan = OutputPlan("tools", tool_grammar(TOOLS, forced=True), None, tuple(TOOLS), tuple(TOOLS), True)
    events, outcome = shaped(plan, generate(cache, plan.grammar, seed))
    assert outcome.finish_reason == "tool_calls" and outcome.content is None
    (call,) = outcome.tool_calls
    name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"])
    schema = next(t.function.parameters for t in TOOLS if t.function.name == name)
    Draft202012Validator(schema).validate(arguments)
    first, *rest = [e.tool_calls[0] for e in events]
    assert first["id"] == call["id"] and first["type"] == "function" and first["function"]["name"] == name
    assert "".join(d["function"]["arguments"] for d in rest) == call["function"]["arguments"]


def test_a_tool_without_parameters_is_called_with_no_arguments(cache):
    bare = Tool.model_validate({"type": "function", "function": {"name": "pause"}})
    plan = OutputPlan("tools", tool_grammar([bare], forced=True), None, (bare,), (bare,), True)
    for seed in range(5):
        _, outcome = shaped(plan, generate(cache, plan.grammar, seed, bias={256 + MERGED.index(b'{"'): 4.0}))
        assert outcome.tool_calls[0]["function"] == {"name": "pause", "arguments": "{}"}
    with pytest.raises(Exception) as err:  # and arguments for it would be a bug
        shaped(plan, b'<tool_call>\n{"name": "pause", "arguments": {"now": true}}\n</tool_call>')
    assert err.value.code == "internal"


def test_auto_text_answers_end_on_a_stop_and_never_start_like_a_call(cache):
    plan = OutputPlan("tools", tool_grammar(TOOLS, forced=False, stops=("zz",)), None, tuple(TOOLS),
                      tuple(TOOLS), False, ("zz",))
    calls = texts = 0
    for seed in range(40):
        text = generate(cache, plan.grammar, seed, bias={ord("z"): 2.0, 256 + MERGED.index(b"<tool_call>"): 2.0 + seed % 2})
        events, outcome = shaped(plan, text)
        if outcome.tool_calls:
            calls += 1
            assert text.startswith(b"<tool_call>\n")
        else:
            texts += 1
            assert not text.lstrip().startswith(b"<tool_call>")
            assert "zz" not in outcome.content and b"zz" not in text[:-2]
            assert "".join(e.text for e in events) == outcome.content
    assert texts and calls  # the biased noise takes both branches in 40 tries


def test_a_call_cut_by_max_tokens_is_reported_as_length(cache):
    plan = OutputPlan("tools", tool_grammar(TOOLS, forced=True), None, tuple(TOOLS), tuple(TOOLS), True)
    _, outcome = shaped(plan, b'<tool_call>\n{"name": "lamp", "arguments": {"on": tr', finish="length")
    assert outcome.finish_reason == "length"
    assert outcome.tool_calls[0]["function"] == {"name": "lamp", "arguments": '{"on": tr'}


def test_output_that_breaks_the_schema_is_an_internal_error_not_an_answer():
    plan = OutputPlan("json", json_grammar({"type": "integer"}), {"type": "integer"})
    with pytest.raises(Exception) as err:
        shaped(plan, b'"seven"')
    assert err.value.code == "internal"
    plan = OutputPlan("tools", "", None, tuple(TOOLS), tuple(TOOLS), True)
    with pytest.raises(Exception) as err:
        shaped(plan, b'<tool_call>\n{"name": "thermostat", "arguments": {"celsius": 99}}\n</tool_call>')
    assert err.value.code == "internal"


@pytest.mark.parametrize("fields, pieces", [
    ({"response_format": {"type": "json_object"}}, ["[1, ", "2]"]),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer"}}}},
     ['"se', 'ven"']),
    ({"tools": TOOL_BODIES, "tool_choice": "required"},
     ["<tool_call>\n", '{"name": "thermostat", "arguments": ', '{"celsius": 99}}', "\n</tool_call>"]),
    ({"tools": TOOL_BODIES, "tool_choice": "required"}, ["t0 ", "t1 "]),
])
def test_the_core_answers_internal_when_an_engine_breaks_the_grammar(fields, pieces):
    """An engine that ignores the grammar: the core logs it and answers `internal` after the streamed
    pieces; no final event passes the output on as an answer."""
    import asyncio

    from structlog.testing import capture_logs

    from edged.config import RequestLimits
    from edged.core import Core
    from edged.engines.base import GenerationResult
    from edged.engines.worker import ModelWorker
    from edged.messages import ErrorEvent, FinalEvent, parse_request
    from tests.fakes import FakeEngine, FixedEnergy, make_profile

    class Unconstrained(FakeEngine):
        def generate(self, messages, prompt, params, sink):
            assert params.grammar  # the core asked for a grammar; this engine does not apply it
            for piece in pieces:
                sink(piece)
            return GenerationResult("stop", 3, len(pieces), 0, 0.001, 0.01)

    async def main() -> tuple[list, dict]:
        core = Core(ModelWorker(Unconstrained()), make_profile(), RequestLimits(), FixedEnergy())
        await core.start()
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, **fields}
        job = core.submit(parse_request(json.dumps(body).encode()), transport="test", peer="p")
        events = [event async for event in job.stream()]
        await core.stop()
        return events, core.counts

    with capture_logs() as logs:
        events, counts = asyncio.run(asyncio.wait_for(main(), 30))
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "internal"
    assert "bug in edged" in events[-1].message
    assert not any(isinstance(e, FinalEvent) for e in events) and counts == {"internal": 1}
    assert [entry["log_level"] for entry in logs if "constrained" in entry["event"]] == ["error"]
    logged = json.dumps(logs, default=str)
    assert not any(piece.strip() in logged for piece in pieces if len(piece.strip()) > 2)  # never the output


def test_plain_text_passes_through():
    events, outcome = shaped(OutputPlan("text"), b"hello")
    assert outcome.content == "hello" and all(isinstance(e, TokenEvent) and e.tool_calls is None for e in events)


def test_relay_keeps_tool_call_pieces_apart_and_in_order():
    import asyncio
    from types import SimpleNamespace

    from edged.messages import FinalEvent
    from edged.summary import RequestSummary
    from edged.transports.relay import relay_events

    summary = RequestSummary(request_id="r", transport="t", peer="p", client=None, priority="normal",
                             profile="x", outcome="ok", finish_reason="tool_calls")
    call = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "lamp", "arguments": ""}}]
    piece = [{"index": 0, "function": {"arguments": '{"on": true}'}}]
    sent: list[dict] = []

    async def run() -> str:
        job = SimpleNamespace(request_id="r", request=SimpleNamespace(stream=True), events=asyncio.Queue())
        for event in (TokenEvent("a"), TokenEvent("b"), TokenEvent("", call), TokenEvent("", piece),
                      FinalEvent(summary)):
            job.events.put_nowait(event)

        async def send(obj, final, error):
            sent.append(obj)

        return await relay_events(job, "m", send)

    assert asyncio.run(run()) == "ok"
    deltas = [s["choices"][0]["delta"] for s in sent]
    assert deltas == [{"content": "ab"}, {"tool_calls": call}, {"tool_calls": piece}, {}]
    assert sent[-1]["choices"][0]["finish_reason"] == "tool_calls"
