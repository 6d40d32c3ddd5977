"""A second edged daemon for the structured-output scenario alone.

Constrained decoding imports llguidance and builds a vocabulary index that stays in memory (~20-35 MB
for the demo model). On the `edged` target that would make its peak RSS a measure of work llama-server
is not asked to do; here the cost is measured on its own daemon and reported apart.
"""

from __future__ import annotations

from benchlib.targets.base import PROCESS, STRUCTURED
from benchlib.targets.edged_socket import EdgedSocketTarget


class EdgedStructuredTarget(EdgedSocketTarget):
    name = "edged-structured"
    label = "edged (structured output)"
    capabilities = frozenset({PROCESS, STRUCTURED})
