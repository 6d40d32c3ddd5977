"""`edged.client` is the documented client API (issue 17): the structured-output helpers and both clients."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_client_api_exposes_the_helpers_and_both_clients() -> None:
    import edged.client as api
    from edged.clients.mqtt import SealedMqttClient
    from edged.clients.socket import SocketClient

    assert api.SocketClient is SocketClient and api.SealedMqttClient is SealedMqttClient
    assert api.json_schema_format({"type": "object"})["type"] == "json_schema"
    assert api.tool_choice("f") == {"type": "function", "function": {"name": "f"}}
    with pytest.raises(AttributeError):
        api.NoSuchThing  # noqa: B018


def test_importing_the_client_api_does_not_import_paho() -> None:
    probe = "import sys, edged.client; print(any(m.startswith('paho') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
