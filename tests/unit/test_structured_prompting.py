"""Tools and tool turns in the prompt: a tool-aware chat template gets them as its own variables, any
other template the one documented fallback format (docs/protocol.md, "Tools")."""

import json

from edged.engines.chat_template import CHATML_FALLBACK, render_chat
from edged.messages import parse_request
from edged.structured.prompting import FALLBACK_INSTRUCTIONS, template_knows_tools
from edged.structured.shaper import plan_for

# A tool-aware template written the way Hugging Face templates are (Qwen2.5's and Hermes' have this shape):
# `{% if tools %}`, `message.tool_calls` read on every message whether it has them or not, the call's
# arguments as an object through `tojson`, and consecutive `tool` messages joined in one user turn.
TOOL_TEMPLATE = """
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content + '\n' }}{%- endif %}
    {{- '# Tools\n' }}
    {%- for tool in tools %}{{- tool | tojson }}{{- '\n' }}{%- endfor %}
    {{- '<|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}{{- '\n' + message.content }}{%- endif %}
        {%- for call in message.tool_calls %}
            {%- if call.function is defined %}{%- set call = call.function %}{%- endif %}
            {{- '\n<tool_call>\n{"name": "' + call.name + '", "arguments": ' }}
            {{- call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "maxLength": 20}},
                                                "required": ["city"], "additionalProperties": False}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
TURNS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Rain in Oslo?"},
         {"role": "assistant", "content": None, "tool_calls": [CALL]},
         {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 7 C"}]


def rendered(template: str | None, **body) -> str:
    request = parse_request(json.dumps(body).encode())
    return render_chat(template, request.messages, "<s>", "</s>", plan_for(request).prompt_tools)


def test_which_templates_know_tools():
    assert template_knows_tools(TOOL_TEMPLATE)
    assert not template_knows_tools(CHATML_FALLBACK)


def test_a_tool_aware_template_gets_tools_calls_and_results_as_its_own_variables():
    prompt = rendered(TOOL_TEMPLATE, messages=TURNS, tools=[WEATHER])
    assert prompt.startswith("<|im_start|>system\nBe brief.\n# Tools\n")
    spec = json.loads(prompt.split("# Tools\n")[1].split("\n")[0])
    assert spec == {"type": "function", "function": {"name": "get_weather", "description": "Weather now in a city",
                                                     "parameters": WEATHER["function"]["parameters"]}}
    # The call's arguments reach the template as an object, not as the wire's JSON string.
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in prompt
    assert "<|im_start|>user\n<tool_response>\nRain, 7 C\n</tool_response><|im_end|>" in prompt
    assert "<|im_start|>assistant\nHello!<|im_end|>" in prompt  # a turn without tool_calls, read all the same
    assert FALLBACK_INSTRUCTIONS not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_any_other_template_gets_the_documented_fallback_format():
    prompt = rendered(None, messages=TURNS, tools=[WEATHER])
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n" + FALLBACK_INSTRUCTIONS)
    spec = json.loads(system.split(FALLBACK_INSTRUCTIONS)[1])
    assert spec == {"name": "get_weather", "description": "Weather now in a city",
                    "parameters": WEATHER["function"]["parameters"]}
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
            "</tool_call><|im_end|>") in prompt
    # A tool result is a user turn naming the function whose call it answers.
    result = prompt.split("<|im_start|>user\n<tool_response>\n")[1].split("\n</tool_response>")[0]
    assert json.loads(result) == {"name": "get_weather", "content": "Rain, 7 C"}
    assert "<|im_start|>tool" not in prompt


def test_without_a_system_message_the_fallback_adds_one():
    prompt = rendered(None, messages=TURNS[1:4], tools=[WEATHER], tool_choice="required")
    assert prompt.startswith("<|im_start|>system\n" + FALLBACK_INSTRUCTIONS)
    assert prompt.count("<|im_start|>system") == 1


def test_tool_choice_none_shows_no_tools_but_keeps_the_earlier_turns():
    for template in (None, TOOL_TEMPLATE):
        prompt = rendered(template, messages=TURNS, tools=[WEATHER], tool_choice="none")
        assert "Weather now in a city" not in prompt and FALLBACK_INSTRUCTIONS not in prompt
        assert '"arguments": {"city": "Oslo"}' in prompt and "Rain, 7 C" in prompt


def test_plain_chats_render_as_before():
    messages = [{"role": "user", "content": "Hi"}]
    assert rendered(TOOL_TEMPLATE, messages=messages) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert rendered(None, messages=messages) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
