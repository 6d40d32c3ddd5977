"""MQTT topic rules for response topics and the allow-list's response prefixes."""

from __future__ import annotations

from typing import Final

from edged.crypto.wire import LOCAL_TOPIC, MAX_RESP_TOPIC_BYTES

_FORBIDDEN_CHARS: Final = frozenset("+#\0")


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` is not a concrete MQTT topic a device may publish to, or None if it is."""
    if not topic:
        return "the topic is empty"
    if len(topic.encode("utf-8")) > MAX_RESP_TOPIC_BYTES:
        return f"the topic is longer than {MAX_RESP_TOPIC_BYTES} bytes"
    if _FORBIDDEN_CHARS.intersection(topic):
        return "the topic contains an MQTT wildcard (+ or #) or a NUL character"
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in topic):
        return "the topic contains a control character"
    if "" in topic.split("/"):
        return "the topic has an empty level (leading, trailing or doubled '/')"
    if topic.startswith("$"):
        return "topics starting with '$' are reserved for the broker"
    return None


def normalise_prefix(prefix: str) -> str:
    """A response prefix as the device compares it: ``edged/clients/laptop/`` means ``edged/clients/laptop``."""
    stripped = prefix.rstrip("/")
    return stripped or prefix  # "/" alone stays, so that prefix_problem can say what is wrong with it


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be an allow-list response prefix, or None if it can; says how to write it."""
    if prefix == LOCAL_TOPIC:
        return None
    problem = topic_problem(prefix)
    if problem is None:
        return None
    levels = [level for level in prefix.split("/") if level]
    suggestion = "/".join(levels)
    if suggestion and suggestion != prefix and topic_problem(suggestion) is None:
        return f"{problem}; write it as {suggestion!r}"
    return f"{problem}; a response prefix is one or more topic levels, e.g. 'edged/clients/laptop', or 'local'"


def response_topic_allowed(topic: str, prefix: str, *, local: bool) -> str | None:
    """None if a response may go to ``topic`` for a client whose allow-list prefix is ``prefix``.

    A topic is within a prefix if it equals it or starts with prefix + "/", and is itself a valid
    concrete topic. ``local`` (the Unix socket) only matches the prefix ``local``; a request that
    arrived on the socket must ask for ``local`` and one that arrived over MQTT must not.
    """
    if local or topic == LOCAL_TOPIC or prefix == LOCAL_TOPIC:
        if local and topic == LOCAL_TOPIC and prefix == LOCAL_TOPIC:
            return None
        if local and topic != LOCAL_TOPIC:
            return "a request on the Unix socket must use the response topic 'local'"
        if not local and topic == LOCAL_TOPIC:
            return "the response topic 'local' is only valid on the Unix socket"
        return f"response prefix {prefix!r} does not allow {'the Unix socket' if local else 'MQTT'}"
    problem = topic_problem(topic)
    if problem is not None:
        return problem
    if topic != prefix and not topic.startswith(prefix + "/"):
        return f"response topic {topic!r} is outside the allowed prefix {prefix!r}"
    return None
