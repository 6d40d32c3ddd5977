"""Device and client keys for the sealed targets, made with the real `edged keys` commands.

Going through the commands (not the library) means the benchmark provisions a device exactly as an
operator would, so a broken command or file format fails the benchmark instead of hiding behind it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchlib.settings import REPO, VENV_PYTHON

COMMAND_TIMEOUT_S = 60.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ClientKey:
    label: str
    key_file: Path
    public_hex: str
    response_prefix: str


@dataclass(frozen=True)
class DeviceKeys:
    state_dir: Path
    identity_hex: str        # the device identity public key clients pin (`edged keys show`)
    fingerprint: str
    clients: dict[str, ClientKey]

    @property
    def identity(self) -> bytes:
        return bytes.fromhex(self.identity_hex)


def edged_keys(*args: str, env: dict[str, str] | None = None) -> str:
    """Run `python -m edged keys ARGS`; its stdout, or RuntimeError with its stderr."""
    cmd = [str(VENV_PYTHON), "-m", "edged", "keys", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"`edged keys {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _field(output: str, name: str) -> str:
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    raise RuntimeError(f"`edged keys show` printed no {name!r} line:\n{output}")


def provision(state_dir: Path, key_dir: Path, clients: dict[str, str], env: dict[str, str] | None = None) -> DeviceKeys:
    """Identity in `state_dir`, and one new client key per {label: response_prefix}, each allowed on it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    key_dir.mkdir(parents=True, exist_ok=True)
    edged_keys("init", "--state-dir", str(state_dir), env=env)
    made: dict[str, ClientKey] = {}
    for label, prefix in clients.items():
        key_file = key_dir / f"{label}.key"
        key_file.unlink(missing_ok=True)   # a rerun in the same directory gets a fresh key
        public_hex = edged_keys("client-new", "--out", str(key_file), env=env).strip().splitlines()[0]
        if not _HEX64.match(public_hex):
            raise RuntimeError(f"`edged keys client-new` printed {public_hex!r}, not a 64-hex-digit public key")
        edged_keys("allow", "add", "--state-dir", str(state_dir), "--label", label, "--public-key", public_hex,
                   "--response-prefix", prefix, env=env)
        made[label] = ClientKey(label=label, key_file=key_file, public_hex=public_hex, response_prefix=prefix)
    shown = edged_keys("show", "--state-dir", str(state_dir), env=env)
    identity_hex = _field(shown, "public_key")
    if not _HEX64.match(identity_hex):
        raise RuntimeError(f"`edged keys show` printed the identity key {identity_hex!r}, not 64 hex digits")
    return DeviceKeys(state_dir=state_dir, identity_hex=identity_hex, fingerprint=_field(shown, "fingerprint"),
                      clients=made)
