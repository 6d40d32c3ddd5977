"""The registry of benchmark targets, in the order a run measures them.

To add a target, subclass benchlib.targets.base.Target (or a close relative) and register it here;
`scripts/bench --targets NAME,...` then selects it and every scenario whose `requires` it meets runs on it.
Planned targets, each a small subclass:
  * edged over MQTT through a local mosquitto, sealed: start mosquitto on a free loopback port (see
    tests/mosquitto.py), serve with EDGED_MQTT__* pointing at it, send sealed requests with edged.crypto.client.
  * edged sealed over the socket: EdgedSocketTarget with `chat` using SocketClient.ask_sealed.
  * edged per power profile: EdgedSocketTarget subclasses with `profile = "eco"` etc.; the final event's
    edged.energy_j over completion tokens gives J/token (RequestSample.server["edged"] keeps it).
  * the ONNX engine: EdgedSocketTarget with `serve_args` adding `--model <onnx dir>`.
"""

from __future__ import annotations

from benchlib.targets.base import Target, TargetContext
from benchlib.targets.edged_socket import EdgedSocketTarget
from benchlib.targets.inprocess_engine import InProcessEngineTarget
from benchlib.targets.llama_server import LlamaServerTarget
from benchlib.targets.raw_llama_cpp import RawLlamaCppTarget

TARGETS: dict[str, type[Target]] = {
    target.name: target
    for target in (LlamaServerTarget, RawLlamaCppTarget, EdgedSocketTarget, InProcessEngineTarget)
}

__all__ = ["TARGETS", "Target", "TargetContext"]
