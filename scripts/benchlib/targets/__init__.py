"""The registry of benchmark targets, in the order a run measures them.

To add a target, subclass benchlib.targets.base.Target (or a close relative, e.g. EdgedSocketTarget with
another `prepare`/`serve_args`/`chat`) and register it here; `scripts/bench --targets NAME,...` then
selects it, and every scenario whose `requires` it meets runs on it. A target that cannot run on this
tree or machine says why in `unavailable()` and is skipped with that note instead of failing the run
(edged-onnx until the ONNX converter and engine are in the tree).
"""

from __future__ import annotations

from benchlib.targets.base import Target, TargetContext
from benchlib.targets.edged_http import EdgedHttpTarget
from benchlib.targets.edged_mqtt import EdgedMqttTarget
from benchlib.targets.edged_onnx import EdgedOnnxTarget
from benchlib.targets.edged_prefix import EdgedPrefixTarget
from benchlib.targets.edged_profiles import EdgedProfilesTarget
from benchlib.targets.edged_socket import EdgedSocketTarget
from benchlib.targets.edged_structured import EdgedStructuredTarget
from benchlib.targets.edged_wyoming import EdgedWyomingTarget
from benchlib.targets.inprocess_engine import InProcessEngineTarget
from benchlib.targets.llama_server import LlamaServerTarget
from benchlib.targets.raw_llama_cpp import RawLlamaCppTarget
from benchlib.targets.seal_micro import SealMicroTarget

TARGETS: dict[str, type[Target]] = {
    target.name: target
    for target in (LlamaServerTarget, RawLlamaCppTarget, EdgedSocketTarget, InProcessEngineTarget,
                   EdgedMqttTarget, EdgedProfilesTarget, SealMicroTarget, EdgedOnnxTarget, EdgedHttpTarget,
                   EdgedWyomingTarget, EdgedStructuredTarget, EdgedPrefixTarget)
}

__all__ = ["TARGETS", "Target", "TargetContext"]
