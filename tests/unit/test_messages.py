"""Request parsing: the OpenAI subset of e2e-v1 §5, strict, every bad field named."""

import json

import pytest

from edged.errors import BadRequest
from edged.messages import parse_request

OK = {"messages": [{"role": "user", "content": "hi"}]}


def body(**extra):
    return json.dumps({**OK, **extra}).encode()


def test_minimal_defaults():
    req = parse_request(body())
    assert req.priority == "normal" and req.stream is False and req.temperature == 0.0


def test_full_request():
    req = parse_request(body(max_tokens=5, temperature=0.7, top_p=0.9, stop=["\n"], seed=3, stream=True,
                             priority="interactive", deadline_ms=1000, model="x", pad="....",
                             response_format={"type": "text"}))
    assert req.stop_list() == ("\n",) and req.seed == 3


def test_prompt_instead_of_messages():
    assert parse_request(b'{"prompt": "Once upon"}').prompt == "Once upon"


@pytest.mark.parametrize("raw, needle", [
    (b"not json", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (body(unknown=1), "unknown"),
    (body(max_tokens="5"), "max_tokens"),
    (body(max_tokens=0), "max_tokens"),
    (body(temperature=5), "temperature"),
    (body(stream="yes"), "stream"),
    (body(priority="urgent"), "priority"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (body(response_format={"type": "xml"}), "response_format"),
    (json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(), "role"),
    (json.dumps({"messages": [{"role": "user"}]}).encode(), "content"),
    (json.dumps({"messages": [], "prompt": "x"}).encode(), "messages"),
    (json.dumps({"prompt": "x", "messages": OK["messages"]}).encode(), "exactly one"),
    (b"{}", "exactly one"),
])
def test_rejected_with_reason(raw, needle):
    with pytest.raises(BadRequest) as err:
        parse_request(raw)
    assert needle in err.value.message
