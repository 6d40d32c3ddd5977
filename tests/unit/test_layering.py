"""The arrows of docs/architecture.md, checked: a forbidden import anywhere in edged/ fails here.

Every import counts, type-only ones too (they are arrows a reader follows). A rule names a package
(or module) and the packages it must never import; each rule has its reason in the architecture doc.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edged

ROOT = Path(edged.__file__).parent

# (who, never imports any of these, why): a name covers the module and everything under it.
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("edged.errors", ("edged",), "the exception tree sits below everything"),
    ("edged.topics", ("edged",), "topic names are shared vocabulary, built from nothing but strings"),
    ("edged.transports", ("edged.engines", "edged.power", "edged.crypto", "edged.core", "edged.daemon",
                          "edged.fleet", "edged.telemetry", "edged.control", "edged.clients"),
     "transports only move bytes; they reach the rest through edged.ports"),
    ("edged.core", ("edged.crypto", "edged.transports", "edged.fleet", "edged.mqtt", "edged.telemetry",
                    "edged.daemon", "edged.clients"), "the core admits and runs requests; it knows no transport or key"),
    ("edged.engines", ("edged.core", "edged.transports", "edged.power", "edged.crypto", "edged.fleet",
                       "edged.mqtt", "edged.telemetry", "edged.daemon"), "an engine only turns tokens into tokens"),
    ("edged.power", ("edged.core", "edged.transports", "edged.engines", "edged.crypto", "edged.fleet",
                     "edged.mqtt", "edged.telemetry", "edged.daemon"), "power reads sensors and decides profiles"),
    ("edged.crypto", ("edged.transports", "edged.core", "edged.engines", "edged.power", "edged.fleet",
                      "edged.mqtt", "edged.telemetry", "edged.daemon", "edged.clients"), "e2e-v1 is pure"),
    ("edged.mqtt", ("edged.crypto", "edged.transports", "edged.fleet", "edged.core", "edged.engines",
                    "edged.telemetry", "edged.power", "edged.daemon", "edged.clients"),
     "the MQTT link library sits below everything that rides on it"),
    ("edged.telemetry", ("edged.power", "edged.transports", "edged.core", "edged.engines", "edged.crypto",
                         "edged.fleet", "edged.daemon"), "telemetry renders records it is given"),
    ("edged.fleet", ("edged.transports", "edged.core", "edged.daemon", "edged.clients", "edged.power"),
     "updates reach the device through edged.ports, topics through edged.topics"),
    ("edged.fleet.device", ("edged.fleet.depot",), "the device never runs operator or depot code"),
    ("edged.fleet.depot", ("edged.fleet.device",), "the operator's tools and the depot never run device code"),
    ("edged.fleet.dsse", ("edged.fleet.device", "edged.fleet.depot"), "signed documents are shared by both sides"),
    ("edged.fleet.trust", ("edged.fleet.device", "edged.fleet.depot"), "signed documents are shared by both sides"),
    ("edged.fleet.manifest", ("edged.fleet.device", "edged.fleet.depot"), "signed documents are shared by both sides"),
    ("edged.fleet.messages", ("edged.fleet.device", "edged.fleet.depot"), "wire frames are shared by both sides"),
    ("edged.fleet.settings", ("edged.fleet.device", "edged.fleet.depot"), "the [updates] section is read by the config"),
    ("edged.fleet.hashing", ("edged.fleet.device", "edged.fleet.depot"), "shared by both sides"),
    ("edged.fleet.install_window", ("edged.fleet.device", "edged.fleet.depot"),
     "the install window is part of the [updates] section the config reads"),
    ("edged.testing.fleet_sim", ("edged.fleet.depot", "edged.fleet.device", "edged.daemon", "edged.core",
                                 "edged.engines"), "the simulator is a device's wire protocol, without a model"),
    ("edged.clients", ("edged.daemon", "edged.core", "edged.engines", "edged.power", "edged.fleet",
                       "edged.telemetry", "edged.control"), "a client runs on another machine than the daemon"),
]

# Building the parts (edged.assembly) is the lifecycle owner's business: who may not import the daemon
# may not import its composition either.
RULES = [(who, (*never, "edged.assembly") if "edged.daemon" in never else never, why) for who, never, why in RULES]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from edged import atomic
    return {name for name in names if name == "edged" or name.startswith("edged.")}


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


GRAPH = {module_name(path): imports_of(path) for path in sorted(ROOT.rglob("*.py"))}


@pytest.mark.parametrize(("who", "never", "why"), RULES, ids=[rule[0] for rule in RULES])
def test_no_forbidden_arrow(who: str, never: tuple[str, ...], why: str):
    broken = sorted(f"{module} -> {target}" for module, targets in GRAPH.items() if under(module, who)
                    for target in targets
                    if any(under(target, banned) for banned in never) and not under(target, who)
                    )
    assert broken == [], f"{who}: {why}"


def test_the_product_never_imports_tests_or_scripts():
    strays = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            strays += [f"{module_name(path)} -> {name}" for name in names
                       if name.split(".")[0] in ("tests", "benchlib", "scripts")]
    assert strays == []


def test_the_rules_see_the_whole_tree():
    assert len(GRAPH) > 150 and any(under(name, "edged.fleet.device") for name in GRAPH)


def test_test_hooks_come_through_the_one_seam():
    """Every EDGED_TEST_* switch is defined in edged/testing/; the config loader only names the prefix."""
    strays = [module_name(path) for path in sorted(ROOT.rglob("*.py"))
              if "EDGED_TEST_" in path.read_text() and not under(module_name(path), "edged.testing")
              and module_name(path) != "edged.config"]
    assert strays == []
