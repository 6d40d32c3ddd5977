"""edged whose model is reloaded on purpose: restarts, profile switches and idle unloads, with the prefix state on.

Its profiles are a copy of the shipped ones with the benchmark's thread count in `performance` and
`balanced` and a short `[idle] unload_after_s` in `performance`, so the prefix-after-reload scenario
can cause each kind of reload in seconds. Its own state directory (and so its own prefix store)
survives the restarts the scenario makes.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

from benchlib.settings import PROFILES_DIR
from benchlib.targets.base import PREFIX_RELOAD, PROCESS
from benchlib.targets.edged_socket import EdgedSocketTarget

IDLE_UNLOAD_S = 4.0
SWITCH_PROFILE = "balanced"   # context 2048 and batch 256 against performance's 4096 and 512: a real reload


def patched_profile(source: str, threads: int, unload_after_s: float | None) -> str:
    text, count = re.subn(r"(?m)^(threads\s*=\s*)\d+", rf"\g<1>{threads}", source, count=1)
    if unload_after_s is not None:
        text, more = re.subn(r"(?m)^#?\s*unload_after_s\s*=\s*[0-9.]+.*$", f"unload_after_s = {unload_after_s}", text,
                             count=1)
        count += more
    parsed = tomllib.loads(text)
    if count != (2 if unload_after_s is not None else 1) or parsed["engine"]["threads"] != threads:
        raise RuntimeError("could not patch a copy of the shipped profile")
    return text


class EdgedPrefixTarget(EdgedSocketTarget):
    name = "edged-prefix"
    label = "edged (prefix state, reloads)"
    capabilities = frozenset({PROCESS, PREFIX_RELOAD})

    def prepare(self) -> None:
        profiles = self._dir / "reload-profiles"
        shutil.copytree(PROFILES_DIR, profiles, dirs_exist_ok=True)
        threads = self.context.engine.threads
        for name, unload in (("performance", IDLE_UNLOAD_S), (SWITCH_PROFILE, None)):
            path: Path = profiles / f"{name}.toml"
            path.write_text(patched_profile((PROFILES_DIR / f"{name}.toml").read_text(), threads, unload))
        self._profiles_dir = profiles
