"""Structured output and tools at the request boundary: the schema subset, bounds, tools and tool turns."""

import json

import pytest

from edged.errors import BadRequest
from edged.messages import parse_request
from edged.structured.schema import MAX_DEPTH, MAX_SCHEMA_BYTES

USER = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "maxLength": 40}},
                                                "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def with_schema(schema, **extra):
    return json.dumps({"messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}, **extra}).encode()


def rejected(raw: bytes) -> str:
    with pytest.raises(BadRequest) as err:
        parse_request(raw)
    return err.value.message


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


def test_every_supported_keyword_is_accepted():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "t", "description": "d",
        "type": "object", "additionalProperties": False, "required": ["a", "b", "c", "d", "e", "f"],
        "properties": {
            "a": {"type": "string", "minLength": 1, "maxLength": 5},
            "b": {"type": "integer", "minimum": 0, "maximum": 9},
            "c": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 2},
            "d": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/point"}]},
            "e": {"type": ["number", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "f": {"const": "fixed"},
        },
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "boolean"}}}},
    }
    request = parse_request(with_schema(schema))
    assert request.response_format.json_schema.schema_ == schema
    assert parse_request(json.dumps({"messages": USER, "response_format": {"type": "json_object"}}).encode())


@pytest.mark.parametrize("schema, needle", [
    ({"type": "string", "pattern": "^a+$"}, "keyword `pattern`"),
    ({"type": "string", "format": "email"}, "keyword `format`"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}}, "at /properties/a: keyword `oneOf`"),
    ({"allOf": [{"type": "string"}]}, "keyword `allOf`"),
    ({"type": "object", "patternProperties": {"x": {}}}, "keyword `patternProperties`"),
    ({"type": "strin"}, "not a valid JSON Schema"),
    ({"type": "string", "minLength": -1}, "not a valid JSON Schema"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "`minLength` is above `maxLength`"),
    ({"type": "integer", "minimum": 5, "maximum": 2}, "`minimum` is above `maximum`"),
    ({"$ref": "#/$defs/missing"}, "is not one of this schema's `$defs`"),
    ({"$ref": "https://example.com/schema.json"}, "only local references"),
    ({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {
        "next": {"$ref": "#/$defs/node"}}}}}, "recursive `$ref`"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "type": "string"}, "recursive `$ref`"),
    ({"type": "object", "properties": {"child": {"$ref": "#"}}}, "recursive `$ref` '#' (the whole schema)"),
    (nested(MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
    (nested(200), "nests objects and arrays more than 64 deep"),  # jsonschema's own check overflowed the stack
    ({"const": json.loads("[" * 300 + "]" * 300)}, "more than 64 deep"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(65)}}, "more than 64 properties"),
    ({"enum": list(range(129))}, "`enum` has more than 128"),
    ({"type": "string", "maxLength": 100_000}, "`maxLength` above"),
    ({"type": "object", "properties": {"a": {"type": "string", "description": "x" * MAX_SCHEMA_BYTES}}},
     f"at most {MAX_SCHEMA_BYTES}"),
    ([1, 2], "valid dictionary"),
])
def test_schemas_outside_the_subset_are_refused_by_name(schema, needle):
    message = rejected(with_schema(schema))
    assert "json_schema.schema" in message and needle in message


def test_defs_names_with_pointer_escapes_resolve():
    schema = {"$ref": "#/$defs/unit~1si~0x", "$defs": {"unit/si~x": {"enum": ["m", "s"]}}}
    assert parse_request(with_schema(schema)).response_format.json_schema.schema_ == schema


def test_ref_fan_out_is_bounded_when_expanded():
    # Each level refers to the next one 8 times: small to write, 8^5 subschemas when expanded.
    defs = {f"l{i}": {"type": "object", "properties": {f"k{j}": {"$ref": f"#/$defs/l{i + 1}"} for j in range(8)}}
            for i in range(5)}
    defs["l5"] = {"type": "integer"}
    assert "more than 4000 subschemas" in rejected(with_schema({"$ref": "#/$defs/l0", "$defs": defs}))


def test_an_unsatisfiable_schema_is_a_bad_request():
    assert "cannot be enforced" in rejected(with_schema({"type": "object", "properties": {"a": {"type": "string"}},
                                                         "required": ["a", "b"], "additionalProperties": False}))


def test_properties_declared_in_anyof_branches_stay_possible():
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}},
              "anyOf": [{"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]}
    assert parse_request(with_schema(schema)).response_format.json_schema.schema_ == schema


def test_a_range_finer_than_the_generated_decimals_is_refused_with_the_reason():
    message = rejected(with_schema({"type": "number", "exclusiveMinimum": 0, "maximum": 1e-7}))
    assert "cannot be enforced" in message and "at most 6 decimals" in message


def test_response_format_needs_a_known_type_and_a_name():
    assert "response_format" in rejected(json.dumps({"messages": USER, "response_format": {"type": "xml"}}).encode())
    assert "name" in rejected(json.dumps({"messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}).encode())


def tools_body(**extra) -> bytes:
    return json.dumps({"messages": USER, "tools": [WEATHER, TIME], **extra}).encode()


@pytest.mark.parametrize("extra, needle", [
    ({"tools": [WEATHER, WEATHER]}, "`tools[1].function.name`: 'get_weather' is given twice"),
    ({"tool_choice": {"type": "function", "function": {"name": "launch"}}}, "`tool_choice.function.name`"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "must describe an object"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}}}]},
     "`tools[0].function.parameters` at /properties/a: keyword `pattern`"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": nested(300)}}]},
     "`tools[0].function.parameters` nests objects and arrays more than 64 deep"),
    ({"response_format": {"type": "json_object"}}, "cannot be combined with `tools`"),
])
def test_bad_tools_name_the_field(extra, needle):
    assert needle in rejected(tools_body(**extra))


def test_tool_choice_without_tools_is_refused():
    raw = json.dumps({"messages": USER, "tool_choice": "required"}).encode()
    assert "`tool_choice` needs `tools`" in rejected(raw)


def test_tools_need_messages():
    raw = json.dumps({"prompt": "x", "tools": [WEATHER]}).encode()
    assert "`tools` need `messages`" in rejected(raw)


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


def conversation(*extra_messages) -> bytes:
    return json.dumps({"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                                    *extra_messages], "tools": [WEATHER]}).encode()


def test_a_tool_turn_answering_an_earlier_call_is_accepted():
    request = parse_request(conversation({"role": "tool", "tool_call_id": "call_1", "content": "12 C, rain"}))
    assert request.messages[1].tool_calls[0].function.name == "get_weather"


@pytest.mark.parametrize("messages, needle", [
    ([{"role": "tool", "tool_call_id": "call_9", "content": "x"}], "`messages[2].tool_call_id`: 'call_9' matches no"),
    ([{"role": "tool", "content": "x"}], "tool_call_id"),
    ([{"role": "user", "tool_call_id": "call_1", "content": "x"}], "tool_call_id"),
    ([{"role": "user", "content": "x", "tool_calls": [CALL]}], "only `assistant` messages carry `tool_calls`"),
    ([{"role": "assistant", "content": None}], "`content` is required"),
    ([{"role": "assistant", "content": None, "tool_calls": [CALL]}], "is used by an earlier tool call"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "id": "c2", "function": {"name": "get_weather", "arguments": "{oops"}}]}],
     "`messages[2].tool_calls[0].function.arguments` is not valid JSON"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "id": "c2", "function": {"name": "get_weather", "arguments": "[1]"}}]}], "must be a JSON object"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "id": "c2", "function": {"name": "get_weather", "arguments": "[" * 30_000 + "]" * 30_000}}]}],
     "`messages[2].tool_calls[0].function.arguments` is nested too deeply"),
    ([{"role": "assistant", "content": None, "tool_calls": [
        {**CALL, "id": "c2", "function": {"name": "get_weather", "arguments": '{"n": ' + "9" * 5000 + "}"}}]}],
     "`messages[2].tool_calls[0].function.arguments` is not acceptable JSON"),
])
def test_bad_tool_turns_name_the_field(messages, needle):
    assert needle in rejected(conversation(*messages))


def test_client_answer_joins_streamed_tool_call_pieces(tmp_path):
    from edged.clients.socket import answer_of, tool_choice
    from edged.errors import ConfigError
    from edged.structured.answers import schema_format_from_file, tools_from_files

    chunks = [{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                      "function": {"name": "lamp", "arguments": ""}}]}}]},
              {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"on": '}}]}}]},
              {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "true}"}}]}}]},
              {"choices": [{"delta": {}, "finish_reason": "tool_calls"}], "edged": {}}]
    answer = answer_of(chunks)
    assert answer.finish_reason == "tool_calls" and answer.content == ""
    assert answer.tool_calls == [{"id": "call_1", "type": "function",
                                  "function": {"name": "lamp", "arguments": '{"on": true}'}}]
    assert tool_choice("required") == "required"
    assert tool_choice("lamp") == {"type": "function", "function": {"name": "lamp"}}
    (tmp_path / "my city.json").write_text('{"type": "object"}')
    assert schema_format_from_file(tmp_path / "my city.json")["json_schema"]["name"] == "my_city"
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER, {"name": "bare", "parameters": {"type": "object"}}]))
    tools = tools_from_files([tmp_path / "tools.json"])
    assert [t["function"]["name"] for t in tools] == ["get_weather", "bare"]
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        tools_from_files([tmp_path / "bad.json"])


@pytest.mark.parametrize("content, needle", [
    (json.dumps({"type": "object", "description": "x" * (2 * MAX_SCHEMA_BYTES)}).encode(), "is larger than"),
    (b'{"type": "obj', "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe\x00", "not valid (JSON|UTF-8)"),
    (b"[" * 100_000, "is larger than"),
    (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
    (b'{"maximum": ' + b"9" * 5000 + b"}", "not acceptable JSON"),
])
def test_hostile_schema_and_tool_files_are_a_clear_error(tmp_path, content, needle):
    from edged.errors import ConfigError
    from edged.structured.answers import schema_format_from_file, tools_from_files

    path = tmp_path / "given.json"
    path.write_bytes(content)
    for read in (schema_format_from_file, lambda p: tools_from_files([p])):
        with pytest.raises(ConfigError, match=needle):
            read(path)
    with pytest.raises(ConfigError, match="cannot read"):
        schema_format_from_file(tmp_path / "missing.json")
    (tmp_path / "numbers.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="a tool must be a JSON object"):
        tools_from_files([tmp_path / "numbers.json"])
