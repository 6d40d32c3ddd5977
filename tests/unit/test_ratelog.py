"""Rejections summarised per interval (issue 12 item 7): a flood writes a bounded number of lines."""

from __future__ import annotations

from typing import Any

from edged.ratelog import RejectSummary


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))


def test_thirty_thousand_rejects_write_one_line_per_kind_per_interval_and_a_summary() -> None:
    now = [0.0]
    log = Lines()
    summary = RejectSummary("rejected", log, interval_s=60.0, clock=lambda: now[0])
    for index in range(30_000):
        summary.note("malformed" if index % 3 else "replay", size=index)
    assert len(log.lines) == 2  # the first of each kind, in full
    assert {fields["kind"] for _, _, fields in log.lines} == {"malformed", "replay"}
    now[0] = 61.0
    summary.note("malformed", size=1)  # the next interval: the summary, then this one in full
    level, event, fields = log.lines[2]
    assert level == "warning" and event == "rejected (summary)"
    assert fields["counts"] == {"malformed": 19_999, "replay": 9_999} and fields["total"] == 29_998
    assert log.lines[3][2]["kind"] == "malformed"
    assert summary.totals == {"malformed": 20_001, "replay": 10_000}


def test_flush_writes_what_was_only_counted_and_nothing_when_quiet() -> None:
    log = Lines()
    summary = RejectSummary("rejected", log, clock=lambda: 0.0)
    summary.flush()
    assert log.lines == []
    summary.note("oversize")
    summary.note("oversize")
    summary.flush()
    assert log.lines[-1][2]["counts"] == {"oversize": 1}
    summary.note("oversize")  # a new interval after a flush: logged in full again
    assert log.lines[-1][0] == "info"


def test_thousands_of_junk_envelopes_write_a_handful_of_lines(tmp_path) -> None:  # noqa: ANN001
    import os

    import pytest
    from structlog.testing import capture_logs

    from edged.crypto.gateway import SealedGateway
    from edged.crypto.settings import E2ESettings
    from edged.errors import EnvelopeRejected

    gateway = SealedGateway(E2ESettings(), tmp_path, "dev-1")
    with capture_logs() as logs:
        for index in range(3000):
            junk = os.urandom(index % 50 + 1) if index % 2 else os.urandom(400)  # too short, or garbage
            with pytest.raises(EnvelopeRejected):
                gateway.open(junk, "edged/dev-1/req")
    lines = [entry for entry in logs if entry["event"].startswith("sealed request rejected")]
    assert 1 <= len(lines) <= 4  # one per check (size, version or prekey), not one per message
    assert sum(gateway.rejects.values()) == 3000


def test_step_guard_logs_one_traceback_and_the_recovery() -> None:
    from edged.ratelog import StepGuard

    log = Lines()
    log.exception = lambda event, **fields: log.lines.append(("exception", event, fields))  # type: ignore[attr-defined]
    log.error = lambda event, **fields: log.lines.append(("error", event, fields))  # type: ignore[attr-defined]
    guard = StepGuard("step failed", log, repeat_every=10)
    failing = [True]

    def step() -> str:
        if failing[0]:
            raise ValueError("broken")
        return "done"

    for _ in range(25):
        assert guard.run("s", step) is None
    failing[0] = False
    assert guard.run("s", step) == "done"
    assert [level for level, _, _ in log.lines] == ["exception", "error", "error", "info"]
