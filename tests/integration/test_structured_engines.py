"""Constrained answers from the real demo model on both engines: 20 schemas and 5 tool sets, every answer
parsed and validated with jsonschema (the shaper validates too; this checks independently)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from edged.convert.onnx_export import convert_gguf
from edged.engines.base import EngineSettings, SamplingParams
from edged.engines.llama import LlamaEngine
from edged.engines.onnx import OnnxEngine
from edged.messages import parse_request
from edged.paths import demo_model_path
from edged.structured.shaper import Shaper, plan_for
from tests.unit.test_structured_grammar import schemas

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a loaded 2-core machine can be very slow


def obj(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            "additionalProperties": False}


NAME = {"type": "string", "minLength": 1, "maxLength": 12}
AGE = {"type": "integer", "minimum": 0, "maximum": 120}
SCHEMAS = [
    ("A person", obj({"name": NAME, "age": AGE})),
    ("Is the sky blue?", obj({"answer": {"type": "boolean"}})),
    ("Pick a colour", obj({"colour": {"enum": ["red", "green", "blue"]}})),
    ("A number from 1 to 10", {"type": "integer", "minimum": 1, "maximum": 10}),
    ("Say yes", {"const": "yes"}),
    ("Three fruits", {"type": "array", "items": NAME, "minItems": 3, "maxItems": 3}),
    ("A city", obj({"city": NAME, "country": NAME, "capital": {"type": "boolean"}})),
    ("A point", obj({"x": {"type": "number", "minimum": -10, "maximum": 10},
                     "y": {"type": "number", "minimum": -10, "maximum": 10}})),
    ("A maybe-missing nickname", obj({"nickname": {"type": ["string", "null"], "maxLength": 10}})),
    ("A sensor reading", obj({"sensor": {"enum": ["temp", "humidity"]}, "value": AGE,
                              "ok": {"type": "boolean"}})),
    ("A shopping list", obj({"items": {"type": "array", "items": obj({"what": NAME, "count": AGE}),
                                       "minItems": 1, "maxItems": 2}})),
    ("A reply or an error", {"anyOf": [obj({"reply": NAME}), obj({"error": {"const": "unknown"}})]}),
    ("Two people", obj({"a": {"$ref": "#/$defs/p"}, "b": {"$ref": "#/$defs/p"}}) | {
        "$defs": {"p": obj({"name": NAME})}}),
    ("An order", obj({"id": {"type": "integer", "minimum": 1, "maximum": 999},
                      "status": {"enum": ["open", "shipped", "done"]}, "note": {"type": "string", "maxLength": 15}},
                     required=["id", "status"])),
    ("A short word", {"type": "string", "minLength": 2, "maxLength": 6}),
    ("Nothing", {"type": "null"}),
    ("A flag list", {"type": "array", "items": {"type": "boolean"}, "maxItems": 4}),
    ("A temperature", obj({"celsius": {"type": "number", "exclusiveMinimum": -50, "exclusiveMaximum": 60}})),
    ("A device", obj({"device": obj({"id": NAME, "online": {"type": "boolean"}}), "tags": {
        "type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}})),
    ("A machine state", obj({"state": {"anyOf": [{"const": "idle"}, {"const": "busy"}, {"type": "null"}]},
                             "load": {"type": "integer", "minimum": 0, "maximum": 100}})),
]
assert len({json.dumps(s) for _, s in SCHEMAS}) == 20


def fn(name: str, description: str, properties: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": obj(properties)}}


TOOL_SETS = [
    ("What is the weather in Paris?", [fn("get_weather", "Weather now in a city", {"city": NAME,
                                                                                  "unit": {"enum": ["c", "f"]}})]),
    ("Turn on the kitchen light", [fn("set_light", "Switch a light", {"room": {"enum": ["kitchen", "hall"]},
                                                                     "on": {"type": "boolean"}}),
                                  fn("set_heat", "Set the heating", {"celsius": {"type": "integer", "minimum": 5,
                                                                                "maximum": 30}})]),
    ("Start conveyor 3 at half speed", [fn("conveyor", "Run a conveyor belt", {
        "belt": {"type": "integer", "minimum": 1, "maximum": 8},
        "speed": {"type": "number", "minimum": 0, "maximum": 1}})]),
    ("Remind me to call mum", [fn("add_reminder", "Add a reminder", {"text": {"type": "string", "maxLength": 30},
                                                                    "when": {"anyOf": [{"type": "null"},
                                                                                       NAME]}})]),
    ("Play some jazz", [fn("play", "Play music", {"genre": NAME, "volume": AGE}),
                        fn("pause", "Pause music", {}), fn("next_track", "Skip a track", {})]),
]


@pytest.fixture(scope="module")
def gguf():
    engine = LlamaEngine(demo_model_path())
    engine.load(EngineSettings(threads=2, context=2048))
    yield engine
    engine.unload()


def ask(engine, body: dict) -> tuple[object, list]:
    request = parse_request(json.dumps(body).encode())
    shaper = Shaper(plan_for(request))
    events: list = []

    def sink(text: str) -> bool:
        events.extend(shaper.feed(text))
        return True

    plan = shaper.plan
    result = engine.generate(request.messages, None, SamplingParams(
        max_tokens=body.get("max_tokens", 96), stop=plan.engine_stops(), grammar=plan.grammar,
        tools=plan.prompt_tools, temperature=body.get("temperature", 0.0), seed=1), sink)
    outcome = shaper.finish(result.finish_reason)
    return outcome, events + outcome.tail


def json_body(prompt: str, schema: dict, **extra) -> dict:
    return {"messages": [{"role": "user", "content": f"{prompt}, as JSON."}], "max_tokens": 96,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                                        "strict": True}}, **extra}


@pytest.mark.parametrize("prompt, schema", SCHEMAS, ids=[p for p, _ in SCHEMAS])
def test_gguf_answers_validate(gguf, prompt, schema):
    outcome, events = ask(gguf, json_body(prompt, schema))
    assert outcome.finish_reason == "stop"
    Draft202012Validator(schema).validate(json.loads(outcome.content))
    assert "".join(e.text for e in events) == outcome.content


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(schema=schemas(max_leaves=4), temperature=st.sampled_from([0.0, 0.7]))
def test_gguf_generated_schemas_always_validate(gguf, schema, temperature):
    outcome, _ = ask(gguf, json_body("Fill in the data", schema, max_tokens=160, temperature=temperature))
    assert outcome.finish_reason == "stop"
    Draft202012Validator(schema).validate(json.loads(outcome.content))


# What a schema leaves open: unbounded numbers (the demo model wrote "3.1111..." and "1234567890000..."
# until max_tokens for most of these) and objects without `additionalProperties` (it invented keys).
OPEN = [
    ("A number", {"type": "number"}),
    ("The population of France", {"type": "integer", "minimum": 0}),
    ("Pi", {"type": "number", "minimum": 3, "maximum": 4}),
    ("A ratio", {"type": "number", "minimum": 0, "maximum": 1}),
    ("A person", {"type": "object", "properties": {"name": NAME, "age": AGE}, "required": ["name"]}),
    ("A city", {"type": "object", "properties": {"city": NAME, "area_km2": {"type": "number"}}}),
]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
@pytest.mark.parametrize("prompt, schema", OPEN, ids=[p for p, _ in OPEN])
def test_gguf_open_schemas_still_end_and_validate(gguf, prompt, schema, temperature):
    outcome, _ = ask(gguf, json_body(prompt, schema, max_tokens=96, temperature=temperature))
    assert outcome.finish_reason == "stop", outcome.content[:120]
    Draft202012Validator(schema).validate(json.loads(outcome.content))


def test_gguf_json_object_mode(gguf):
    outcome, _ = ask(gguf, {"messages": [{"role": "user", "content": "Describe a cat as JSON."}], "max_tokens": 64,
                            "response_format": {"type": "json_object"}, "temperature": 0.8})
    assert outcome.finish_reason in ("stop", "length")
    if outcome.finish_reason == "stop":
        assert isinstance(json.loads(outcome.content), dict)


def check_call(outcome, events, tools: list[dict], name: str | None = None) -> None:
    assert outcome.finish_reason == "tool_calls" and outcome.content is None
    (call,) = outcome.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_")
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    assert call["function"]["name"] in schemas and (name is None or call["function"]["name"] == name)
    Draft202012Validator(schemas[call["function"]["name"]]).validate(json.loads(call["function"]["arguments"]))
    streamed = "".join(e.tool_calls[0]["function"]["arguments"] for e in events)
    assert streamed == call["function"]["arguments"]


@pytest.mark.parametrize("prompt, tools", TOOL_SETS, ids=[p for p, _ in TOOL_SETS])
def test_gguf_required_tool_calls_validate(gguf, prompt, tools):
    body = {"messages": [{"role": "user", "content": prompt}], "tools": tools, "tool_choice": "required"}
    check_call(*ask(gguf, body), tools)


def test_gguf_named_tool_choice_forces_that_tool(gguf):
    prompt, tools = TOOL_SETS[1]
    body = {"messages": [{"role": "user", "content": prompt}], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "set_heat"}}}
    check_call(*ask(gguf, body), tools, name="set_heat")


def test_gguf_auto_answers_text_or_a_valid_call_and_honours_stop(gguf):
    prompt, tools = TOOL_SETS[0]
    outcome, events = ask(gguf, {"messages": [{"role": "user", "content": "Tell me a joke about fish."}],
                                 "tools": tools, "tool_choice": "auto", "stop": ["."], "max_tokens": 48})
    if outcome.tool_calls:
        check_call(outcome, events, tools)
    else:
        assert outcome.content and "." not in outcome.content
        assert outcome.finish_reason in ("stop", "length")
    outcome, events = ask(gguf, {"messages": [{"role": "user", "content": prompt}], "tools": tools})
    if outcome.tool_calls:
        check_call(outcome, events, tools)


def test_gguf_multi_turn_with_a_tool_result(gguf):
    prompt, tools = TOOL_SETS[0]
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                             "arguments": '{"city": "Paris", "unit": "c"}'}}
    body = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": None,
                                                               "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"}],
            "tools": tools, "tool_choice": "none", "max_tokens": 24}
    outcome, _ = ask(gguf, body)
    assert outcome.content and outcome.tool_calls is None


@pytest.fixture(scope="module")
def onnx(tmp_path_factory):
    out: Path = tmp_path_factory.getbasetemp() / "onnx-smollm2"  # shared with the other ONNX tests
    if not (out / "edged_model.json").exists():
        convert_gguf(demo_model_path(), out)
    engine = OnnxEngine(out)
    engine.load(EngineSettings(threads=2, context=2048))
    yield engine
    engine.unload()


@pytest.mark.parametrize("index", [0, 5, 11, 12, 19])
def test_onnx_answers_validate(onnx, index):
    prompt, schema = SCHEMAS[index]
    outcome, _ = ask(onnx, json_body(prompt, schema))
    assert outcome.finish_reason == "stop"
    Draft202012Validator(schema).validate(json.loads(outcome.content))


@pytest.mark.parametrize("index", [0, 2, 4])
def test_onnx_open_schemas_still_end_and_validate(onnx, index):
    prompt, schema = OPEN[index]
    outcome, _ = ask(onnx, json_body(prompt, schema))
    assert outcome.finish_reason == "stop", outcome.content[:120]
    Draft202012Validator(schema).validate(json.loads(outcome.content))


@pytest.mark.parametrize("index", [1, 4])
def test_onnx_required_tool_calls_validate(onnx, index):
    prompt, tools = TOOL_SETS[index]
    body = {"messages": [{"role": "user", "content": prompt}], "tools": tools, "tool_choice": "required"}
    check_call(*ask(onnx, body), tools)
