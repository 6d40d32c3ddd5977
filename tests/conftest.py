"""Shared fixtures: the demo model and daemons started as real subprocesses."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.paths import demo_model_path
from tests.daemon import DaemonProcess


@pytest.fixture(scope="session")
def demo_model() -> Path:
    return demo_model_path()


@pytest.fixture
def make_daemon(tmp_path: Path):
    """Factory for daemons that the test starts itself; every one is killed at the end."""
    daemons: list[DaemonProcess] = []

    def make(*args: str, env: dict[str, str] | None = None, name: str = "d") -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"{name}{len(daemons)}", *args, env=env)
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        daemon.kill()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    """One `edged serve` with the embedded demo model, shared by a test module."""
    d = DaemonProcess(tmp_path_factory.mktemp("daemon"), "--profile", "balanced").start()
    yield d
    d.kill()


# Property tests must not fail on a slow CI machine (no per-example deadline), and a CI run must be
# reproducible (derandomize: the same examples every run; new ones are found by running locally).
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("edged", deadline=None, derandomize=True, print_blob=True)
hypothesis_settings.load_profile("edged")


# The fast lane (`scripts/test -m "not slow"`) is only fast if nothing that starts a daemon, a model
# or a broker slips into it: such a test without the marker stops the run before anything executes.
SLOW_FIXTURES = frozenset({"daemon", "make_daemon", "demo_model", "mosquitto_plain", "mosquitto_tls", "mosquitto_acl"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items if item.get_closest_marker("slow") is None
                and (item.nodeid.startswith("tests/integration/")
                     or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))]
    if unmarked:
        raise pytest.UsageError("these tests start a daemon, model or broker but are not marked slow "
                                "(add pytestmark = pytest.mark.slow): " + ", ".join(unmarked[:10]))
