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
