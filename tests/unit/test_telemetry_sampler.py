"""procfs sampler on a fake /proc tree: parsing, CPU deltas, and malformed input giving None."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.telemetry.sampler import ProcSampler

STATUS = "Name:\tedged\nVmPeak:\t  900 kB\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\nThreads:\t4\n"
MEMINFO = "MemTotal:        8000000 kB\nMemFree:   100 kB\nMemAvailable:    6000000 kB\n"


def _stat_line(utime: int, stime: int, starttime: int = 50_000, comm: str = "python3") -> str:
    # fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    #              cutime cstime priority nice threads itrealvalue starttime ...
    tail = ["S", "1", "2", "3", "0", "-1", "4194560", "10", "0", "0", "0", str(utime), str(stime),
            "0", "0", "20", "0", "4", "0", str(starttime), "123", "456"]
    return f"4242 ({comm}) " + " ".join(tail) + "\n"


def _system_stat(busy: int, idle: int) -> str:
    return f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def proc(tmp_path: Path) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/status").write_text(STATUS)
    (tmp_path / "proc/self/stat").write_text(_stat_line(100, 50))
    (tmp_path / "proc/meminfo").write_text(MEMINFO)
    (tmp_path / "proc/stat").write_text(_system_stat(busy=1000, idle=3000))
    (tmp_path / "proc/uptime").write_text("1000.50 3900.00\n")
    return tmp_path


def _sampler(root: Path, clock: FakeClock | None = None) -> ProcSampler:
    return ProcSampler(root, clock=clock or FakeClock(), clock_ticks_per_s=100, cpu_count=2)


def test_memory_and_uptime_are_read_in_bytes_and_seconds(proc: Path) -> None:
    sampler = _sampler(proc)
    assert sampler.process_memory() == (1024 * 1024, 2048 * 1024)
    assert sampler.system_memory() == (8_000_000 * 1024, 6_000_000 * 1024)
    assert sampler.process_uptime_s() == pytest.approx(1000.5 - 500.0)


def test_cpu_utilisation_is_a_delta_normalised_by_cpus(proc: Path) -> None:
    clock = FakeClock()
    sampler = _sampler(proc, clock)
    assert sampler.process_cpu_utilization() is None  # first call only sets the baseline
    assert sampler.system_cpu_utilization() is None
    clock.now += 2.0
    (proc / "proc/self/stat").write_text(_stat_line(170, 80))  # +100 ticks = 1 s of CPU in 2 s on 2 CPUs
    (proc / "proc/stat").write_text(_system_stat(busy=1050, idle=3150))  # 50 busy of 200
    assert sampler.process_cpu_utilization() == pytest.approx(0.25)
    assert sampler.system_cpu_utilization() == pytest.approx(0.25)


def test_counters_going_backwards_give_none_then_recover(proc: Path) -> None:
    clock = FakeClock()
    sampler = _sampler(proc, clock)
    sampler.process_cpu_utilization()
    clock.now += 1.0
    (proc / "proc/self/stat").write_text(_stat_line(10, 10))
    assert sampler.process_cpu_utilization() is None
    clock.now += 1.0
    (proc / "proc/self/stat").write_text(_stat_line(60, 10))
    assert sampler.process_cpu_utilization() == pytest.approx(0.25)


def test_a_command_name_with_spaces_and_parentheses_is_parsed(proc: Path) -> None:
    (proc / "proc/self/stat").write_text(_stat_line(100, 50, comm="ed ged) (x"))
    assert _sampler(proc).process_uptime_s() == pytest.approx(500.5)


def test_sample_collects_everything(proc: Path) -> None:
    sample = _sampler(proc).sample()
    assert sample.rss_bytes == 1024 * 1024
    assert sample.memory_available_bytes == 6_000_000 * 1024
    assert sample.uptime_s == pytest.approx(500.5)
    assert sample.process_cpu_utilization is None


@pytest.mark.parametrize("name, content", [
    ("proc/self/status", "VmRSS: lots\nVmHWM:\n"),
    ("proc/self/status", b"\xff\xfe\x00garbage"),
    ("proc/meminfo", "MemTotal 8000000 kB\n"),
    ("proc/self/stat", "4242 (edged S 1 2"),
    ("proc/self/stat", "4242 (edged) S 1 2 3\n"),
    ("proc/self/stat", _stat_line(100, 50).replace(" 100 ", " x ")),
    ("proc/stat", "cpu a b c d\n"),
    ("proc/stat", ""),
    ("proc/uptime", "soon\n"),
    ("proc/uptime", ""),
])
def test_malformed_files_read_as_none(proc: Path, name: str, content: str | bytes) -> None:
    target = proc / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    sampler = _sampler(proc)
    sample = sampler.sample()
    touched = {
        "proc/self/status": (sample.rss_bytes, sample.rss_peak_bytes),
        "proc/meminfo": (sample.memory_total_bytes, sample.memory_available_bytes),
        "proc/self/stat": (sample.uptime_s, sampler.process_cpu_utilization()),
        "proc/stat": (sampler.system_cpu_utilization(), sampler.system_cpu_utilization()),
        "proc/uptime": (sample.uptime_s,),
    }[name]
    assert all(value is None for value in touched)


def test_missing_unreadable_and_oversized_sources_read_as_none(tmp_path: Path) -> None:
    (tmp_path / "proc/self/status").mkdir(parents=True)  # a directory where a file should be
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1 kB\n" * 40_000)  # larger than any real meminfo
    sample = _sampler(tmp_path).sample()
    assert sample == type(sample)(None, None, None, None, None, None, None)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux procfs")
def test_the_real_proc_reads() -> None:
    sampler = ProcSampler()
    sample = sampler.sample()
    assert sample.rss_bytes is not None and sample.rss_bytes > 0
    assert sample.memory_total_bytes is not None and sample.memory_total_bytes > 0
    assert sample.uptime_s is not None and sample.uptime_s >= 0
    utilisation = sampler.process_cpu_utilization()
    assert utilisation is not None and 0.0 <= utilisation <= 1.0
