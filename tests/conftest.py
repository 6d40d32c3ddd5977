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
