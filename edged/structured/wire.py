"""The request fields of structured output and tools, in OpenAI's Chat Completions shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from edged.validation import StrictModel

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 32
MAX_ARGUMENTS_CHARS = 65_536


_Strict = StrictModel


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = Field(None, description="edged always enforces the schema; false is not weaker")


class JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class FunctionDef(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=4096)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Strict):
    name: str = Field(pattern=NAME_PATTERN)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    arguments: str = Field(max_length=MAX_ARGUMENTS_CHARS, description="a JSON object, as a string")


class ToolCall(_Strict):
    id: str = Field(min_length=1, max_length=64)
    type: Literal["function"]
    function: FunctionCall
