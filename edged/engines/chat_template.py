"""Render chat messages with the model's own Jinja chat template, in a sandbox (the template is model data)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from edged.errors import EngineError
from edged.messages import ChatMessage

# Used only when a model ships no template; ChatML is what SmolLM2 and many small models use.
CHATML_FALLBACK = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@lru_cache(maxsize=4)
def _compile(template: str) -> Any:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise EngineError(f"chat template refused the conversation: {message}")

    # Jinja's default Undefined, as Hugging Face's renderer has: model templates are written for it and
    # read `tools` or `message.tool_calls` whether they are given or not (strict, those reads failed).
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise EngineError(f"the model's chat template does not compile: {exc}") from None


def prepare_template(template: str | None) -> None:
    """Import jinja2 and compile the template now (at model load): ~50 ms that the first request paid."""
    from edged.structured.prompting import chat_context  # noqa: F401  (imported with the template, not later)

    _compile(template or CHATML_FALLBACK)


def render_chat(template: str | None, messages: list[ChatMessage], bos: str, eos: str,
                tools: Sequence[Any] = ()) -> str:
    from jinja2 import TemplateError

    from edged.structured.prompting import chat_context

    compiled = _compile(template or CHATML_FALLBACK)
    context = {"tools": None} | chat_context(template or CHATML_FALLBACK, messages, tools)  # None when none, as HF
    try:
        return str(compiled.render(**context, add_generation_prompt=True, bos_token=bos, eos_token=eos))
    except TemplateError as exc:
        raise EngineError(f"the model's chat template failed: {exc}") from None
