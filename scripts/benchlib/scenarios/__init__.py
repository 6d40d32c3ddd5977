"""The registry of scenarios: what is done to each running target, in order.

A scenario runs on every selected target that has the capabilities it `requires` (see
benchlib.targets.base), and returns a JSON-ready dict that the report and the comparisons read. To add
one (e.g. a concurrency test), subclass benchlib.scenarios.base.Scenario in a module of its own and add
it to SCENARIOS; idle-cpu stays last because it needs the target to have finished everything else.
"""

from __future__ import annotations

from benchlib.scenarios.base import Log, Scenario
from benchlib.scenarios.http_api import HttpStartupScenario, HttpVsSocketScenario
from benchlib.scenarios.power_profiles import PowerProfilesScenario
from benchlib.scenarios.prefix_reload import PrefixReloadScenario
from benchlib.scenarios.seal_cost import SealCostScenario
from benchlib.scenarios.sealed_socket import SealedSocketScenario
from benchlib.scenarios.standard import AddedTtftScenario, ChatScenario, IdleCpuScenario, PrefixCacheScenario
from benchlib.scenarios.structured import StructuredScenario
from benchlib.scenarios.wyoming_latency import WyomingLatencyScenario

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (ChatScenario(), PrefixCacheScenario(), AddedTtftScenario(), SealedSocketScenario(),
                     SealCostScenario(), PowerProfilesScenario(), StructuredScenario(), HttpVsSocketScenario(),
                     HttpStartupScenario(), WyomingLatencyScenario(), PrefixReloadScenario(), IdleCpuScenario())
}

__all__ = ["SCENARIOS", "Log", "Scenario"]
