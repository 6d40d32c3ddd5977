"""Shared fixtures: the demo model, and daemons in the test process or as real subprocesses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edged.paths import demo_model_path
from tests.daemon import DaemonBase, DaemonProcess
from tests.inprocess import InProcessDaemon


@pytest.fixture(scope="session")
def demo_model() -> Path:
    return demo_model_path()


def _factory(kind: type[DaemonBase], tmp_path: Path, prefix: str) -> Iterator[Callable[..., DaemonBase]]:
    daemons: list[DaemonBase] = []

    def make(*args: str, env: dict[str, str] | None = None, name: str = "d") -> DaemonBase:
        daemon = kind(tmp_path / f"{name}{prefix}{len(daemons)}", *args, env=env)
        daemons.append(daemon)
        return daemon

    yield make
    failures = []
    for daemon in daemons:
        try:
            daemon.kill()
        except AssertionError as exc:  # stop the others first, then fail the test's teardown
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonBase]]:
    """Factory for `edged serve` subprocesses the test starts itself; every one is killed at the end.
    For what needs a process: signals, kill -9, exit codes, the daemon's RSS, EDGED_TEST_* hooks."""
    yield from _factory(DaemonProcess, tmp_path, "")


@pytest.fixture
def make_inprocess_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonBase]]:
    """Factory for daemons on a thread of the test process (tests/inprocess.py), the same arguments
    and env as make_daemon; every one is stopped cleanly at the end, its model and threads freed."""
    yield from _factory(InProcessDaemon, tmp_path, "i")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDaemon]:
    """One daemon with the embedded demo model, in the test process, shared by a test module."""
    d = InProcessDaemon(tmp_path_factory.mktemp("daemon"), "--profile", "balanced").start()
    yield d
    d.kill()


# Property tests must not fail on a slow CI machine (no per-example deadline), and a CI run must be
# reproducible (derandomize: the same examples every run; new ones are found by running locally).
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("edged", deadline=None, derandomize=True, print_blob=True)
hypothesis_settings.load_profile("edged")


# The fast lane (`scripts/test -m "not slow"`) is only fast if nothing that starts a daemon, a model
# or a broker slips into it: such a test without the marker stops the run before anything executes.
SLOW_FIXTURES = frozenset({"daemon", "make_daemon", "make_inprocess_daemon", "demo_model", "mosquitto_plain",
                           "mosquitto_tls", "mosquitto_acl"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items if item.get_closest_marker("slow") is None
                and (item.nodeid.startswith("tests/integration/")
                     or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))]
    if unmarked:
        raise pytest.UsageError("these tests start a daemon, model or broker but are not marked slow "
                                "(add pytestmark = pytest.mark.slow): " + ", ".join(unmarked[:10]))
