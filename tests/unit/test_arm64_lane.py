"""scripts/test-arm64's choice of tests: every one it names exists, and each emulated CPU gets the ones
that prove the engine, the socket, end-to-end encryption, MQTT through mosquitto and a model update.

The lane itself runs for minutes under QEMU; a renamed test would only show there, as a collection error.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def lane() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("test_arm64_script", str(REPO / "scripts" / "test-arm64"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def named_tests() -> list[str]:
    script = lane()
    return [*script.INTEGRATION_SUBSET, *script.QEMU_GAPS]


@pytest.mark.parametrize("node", named_tests())
def test_every_test_the_lane_names_exists(node: str) -> None:
    path, _, name = node.partition("::")
    assert (REPO / path).is_file(), f"scripts/test-arm64 names {path}, which is not in the tree"
    assert name in functions_in(REPO / path), f"scripts/test-arm64 names {node}, which does not exist"


@pytest.mark.parametrize("cpu", ["cortex-a72", "cortex-a76"])
def test_each_emulated_cpu_runs_the_engine_socket_e2e_mqtt_and_update_tests(cpu: str) -> None:
    script = lane()
    assert cpu in script.CPUS
    modules = {node.split("::")[0].rsplit("/", 1)[-1] for node, (_why, cpus) in script.INTEGRATION_SUBSET.items()
               if cpu in cpus}
    # socket: the engine answering; sealed: e2e; mqtt: through mosquitto; fleet_update: release to answer
    assert {"test_socket_daemon.py", "test_sealed_socket.py", "test_mqtt_daemon.py",
            "test_fleet_update.py"} <= modules, modules
    assert all(reason for reason, _cpus in script.INTEGRATION_SUBSET.values())
