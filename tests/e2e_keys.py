"""Provision device and client keys with the real `edged keys` commands, for integration tests."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.slowdown import scaled


@dataclass
class ProvisionedClient:
    key_file: Path
    public_hex: str


def edged(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=scaled(60))
    if check and done.returncode != 0:
        raise AssertionError(f"edged {' '.join(args)} failed: {done.stdout}\n{done.stderr}")
    return done


def device_identity(state_dir: Path) -> tuple[str, str]:
    """(fingerprint, public key hex) printed by `edged keys show`."""
    edged("keys", "init", "--state-dir", str(state_dir))
    shown = edged("keys", "show", "--state-dir", str(state_dir)).stdout
    hexes = re.findall(r"\b[0-9a-f]{64}\b", shown)
    fingerprint = re.findall(r"\b[0-9a-f]{32}\b", shown)
    assert hexes and fingerprint, shown
    return fingerprint[0], hexes[0]


def new_client(workdir: Path, state_dir: Path, label: str, prefix: str, allow: bool = True,
               extra: tuple[str, ...] = ()) -> ProvisionedClient:
    key_file = workdir / f"{label}.key"
    made = edged("keys", "client-new", "--out", str(key_file)).stdout
    public_hex = re.findall(r"\b[0-9a-f]{64}\b", made)[0]
    if allow:
        edged("keys", "allow", "add", "--state-dir", str(state_dir), "--label", label, "--public-key", public_hex,
              "--response-prefix", prefix, *extra)
    return ProvisionedClient(key_file, public_hex)
