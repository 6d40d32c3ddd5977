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


def test_install_state_reads_the_queue_the_profile_and_the_governors_parked_profile():
    from edged.power.governor_rules import GovernorRules
    from tests.fakes import make_profile

    queue = {"waiting": 0, "running": 0}
    car_off = make_profile("car-off")
    car_off = car_off.model_copy(update={"updates": car_off.updates.model_copy(update={"allow_installs": False})})
    core = SimpleNamespace(status=lambda: {"queue": queue}, profile=make_profile("balanced"))
    governor = SimpleNamespace(rules=GovernorRules(ignition_off_profile="car-off",
                                                     order=["performance", "balanced", "eco", "parked", "car-off"]))
    c = DeviceControl(device_id="d", core=core, worker=SimpleNamespace(), governor=governor,  # type: ignore[arg-type]
                      profiles={}, profiles_dir=Path("/nonexistent"), energy=SimpleNamespace(),  # type: ignore[arg-type]
                      gateway=SimpleNamespace(), configured_model=Path("m.gguf"), events=Events())  # type: ignore[arg-type]
    idle = c.install_state()
    assert (idle.busy, idle.profile, idle.parked, idle.profile_allows_installs) == (False, "balanced", False, True)
    queue["waiting"] = 1
    core.profile = car_off
    parked = c.install_state()
    assert (parked.busy, parked.profile, parked.parked, parked.profile_allows_installs) == (True, "car-off", True, False)
