"""DeviceControl.status: parts add sections; a part whose section raises never takes the status down."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edged.control import DeviceControl
from edged.events import Events


def control() -> DeviceControl:
    core = SimpleNamespace(status=lambda: {"requests": {"ok": 3}})
    governor = SimpleNamespace(reason="auto", overrides=dict)
    energy = SimpleNamespace(total_j=1.5, counters=dict)
    gateway = SimpleNamespace(rejects={"size": 2})
    return DeviceControl(device_id="d", core=core, worker=SimpleNamespace(), governor=governor,  # type: ignore[arg-type]
                         profiles={}, profiles_dir=Path("/nonexistent"), energy=energy,  # type: ignore[arg-type]
                         gateway=gateway, configured_model=Path("m.gguf"), events=Events())  # type: ignore[arg-type]


def test_a_section_is_added_under_its_name():
    c = control()
    c.add_status_section("mqtt", lambda: {"dropped_inbound": 4})
    status = c.status()
    assert status["mqtt"] == {"dropped_inbound": 4}
    assert status["requests"] == {"ok": 3} and status["sealed_rejects"] == {"size": 2}


def test_a_raising_section_is_reported_and_the_rest_still_answers():
    c = control()

    def broken() -> dict[str, Any]:
        raise RuntimeError("link gone")

    c.add_status_section("mqtt", broken)
    c.add_status_section("http", lambda: {"listening": True})
    status = c.status()
    assert "link gone" in status["mqtt"]["error"]
    assert status["http"] == {"listening": True} and status["requests"] == {"ok": 3}
