"""One style of log event names: short lower-case sentences ("model failed to load"), never snake_case ids.

Tests and operators key on these names (tests/daemon.py waits for "ready"), so they are an interface.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import edged

LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
ONE_WORD = {"listening", "ready", "request", "stopped", "stopping"}  # the daemon's lifecycle and request line


SUMMARIES = {"RejectSummary", "StepGuard"}  # they log under the event name they are given


def _names_in(node: ast.expr) -> list[str]:
    """The constant names of an event argument, both arms of a conditional included."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _names_in(node.body) + _names_in(node.orelse)
    return []


def event_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for path in Path(edged.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            logs = (isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "logger")
            summarises = isinstance(node.func, ast.Name) and node.func.id in SUMMARIES
            if logs or summarises:
                for name in _names_in(node.args[0]):
                    names[name] = f"{path.name}:{node.lineno}"
    return names


def test_event_names_are_sentences():
    names = event_names()
    assert len(names) > 100
    snake = {name: where for name, where in names.items() if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", name)}
    assert snake == {}
    words = {name: where for name, where in names.items() if " " not in name and name not in ONE_WORD}
    assert words == {}
    capitalised = {name: where for name, where in names.items() if name[:1].isupper()}
    assert capitalised == {}
