"""Opt-in hardware suite: every test skips unless EDGED_HW=1; results go to hw-tests/report.json."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPORT_PATH = Path(os.environ.get("EDGED_HW_REPORT", HERE / "report.json"))
LOCK_PATH = Path(os.environ.get("EDGED_HW_LOCK", "/tmp/edged-hw-tests.lock"))
ENABLED = os.environ.get("EDGED_HW") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hw: needs a real board; runs only with EDGED_HW=1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="hardware suite: set EDGED_HW=1 on a real board to run it")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.hw)
            if not ENABLED:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def board_lock() -> Iterator[None]:
    """One hardware run at a time per board: two would measure each other's load."""
    with open(LOCK_PATH, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
        fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def report(board_lock: None) -> Iterator[dict[str, Any]]:
    """Tests add their results here; the file is written once at the end of the session."""
    data: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "host": platform.node(), "machine": platform.machine(), "results": {}}
    yield data
    REPORT_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
