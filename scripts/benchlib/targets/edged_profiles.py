"""A second edged daemon whose power profile the power-profiles scenario switches, one after another.

Separate from the `edged` target so that the model reloads of the sweep do not touch the `edged`
target's numbers (its peak RSS, idle CPU, prompt cache). It starts like the `edged` target (the
performance profile with the benchmark's thread count); the other profiles run as shipped.
"""

from __future__ import annotations

from benchlib.targets.base import PROCESS, POWER_PROFILES
from benchlib.targets.edged_socket import EdgedSocketTarget


class EdgedProfilesTarget(EdgedSocketTarget):
    name = "edged-profiles"
    label = "edged per power profile"
    # No CHAT: the chat, prefix-cache and idle scenarios already ran on the `edged` target.
    capabilities = frozenset({PROCESS, POWER_PROFILES})
