"""Power profiles with the real model through the daemon (issue 5): pace and overrides in-process; idle
unload against an `edged serve` subprocess, whose RSS is the daemon's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.profiles import profile_toml, profiles_dir

pytestmark = pytest.mark.slow  # starts a daemon or loads a model

LONG = {"prompt": "Count from 1 to 2000: 1, 2, 3, 4,", "max_tokens": 48, "stream": True}

def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def decode_rate(daemon) -> float:
    with daemon.client() as client:
        events = list(client.ask(LONG))
    stats = events[-1]["edged"]
    assert events[-1]["usage"]["completion_tokens"] > 8
    return stats["decode_tokens_per_s"]


def test_pace_limited_profile_lowers_the_token_rate(make_inprocess_daemon, tmp_path: Path):
    directory = profiles_dir(tmp_path, paced=profile_toml("paced", pace="max_tokens_per_s = 8.0"))
    d = make_inprocess_daemon("--profile", "performance", env={"EDGED_PROFILE__DIRECTORY": str(directory)}).start()
    free = decode_rate(d)
    with d.client() as client:
        assert client.control("profile", set="paced")["profile"] == "paced"
    status = d.status()
    assert status["profile"] == "paced" and "local override" in status["profile_reason"]
    paced = decode_rate(d)
    assert paced <= 8.0 * 1.1  # the cap is an upper bound: a slower machine only lowers it
    assert paced < free
    with d.client() as client:
        assert client.control("profile", set="auto")["profile"] == "performance"
    assert d.stop() == 0


def test_idle_unload_frees_memory_and_reloads_on_demand(make_daemon, tmp_path: Path):
    directory = profiles_dir(tmp_path, idler=profile_toml("idler", idle="unload_after_s = 1.0"))
    d = make_daemon("--profile", "idler", env={"EDGED_PROFILE__DIRECTORY": str(directory)}).start()
    decode_rate(d)
    loaded_rss = rss_kib(d.proc.pid)
    d.wait_for_log(lambda line: line.get("event") == "model released while idle")
    assert d.status()["model"] is None
    unloaded_rss = rss_kib(d.proc.pid)
    assert unloaded_rss < loaded_rss - 40_000  # the 98 MB model's pages are out of the RSS (mapping kept)
    decode_rate(d)  # reloads on demand
    assert d.status()["model"]["format"] == "gguf"
    assert d.stop() == 0


def test_final_event_carries_energy_and_profile(daemon):
    with daemon.client() as client:
        final = list(client.ask(LONG))[-1]["edged"]
    assert final["energy_j"] > 0 and final["energy_source"] and final["profile"]
    status = daemon.status()
    assert status["energy"]["total_j"] > 0


def test_profile_commands(tmp_path: Path):
    edged = [sys.executable, "-m", "edged"]
    listed = subprocess.run([*edged, "profiles", "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and all(n in listed.stdout for n in ("performance", "balanced", "eco", "parked"))
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "x"\n[engine]\nthreads = 0\n')
    done = subprocess.run([*edged, "profiles", "validate", str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "engine.threads" in done.stderr + done.stdout
