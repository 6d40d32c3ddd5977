"""The embeddable [e2e] settings section: defaults follow the spec, bad combinations are refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from edged.crypto.settings import E2ESettings


def test_defaults_follow_the_spec() -> None:
    settings = E2ESettings()
    assert (settings.window.past_s, settings.window.future_s) == (120.0, 30.0)
    assert (settings.prekeys.rotate_every_s, settings.prekeys.valid_for_s) == (12 * 3600, 24 * 3600)
    assert settings.max_request_bytes == 256 * 1024
    assert settings.clock_policy == "reject"


def test_toml_section_parses() -> None:
    settings = E2ESettings.model_validate(tomllib.loads(
        'clients_file = "/etc/edged/clients.toml"\nclock_policy = "accept-unsynced"\n'
        "[window]\npast_s = 60\n[prekeys]\nrotate_every_s = 600\nvalid_for_s = 1200\n"))
    assert settings.clients_file == Path("/etc/edged/clients.toml")
    assert settings.window.past_s == 60


@pytest.mark.parametrize("text", [
    "[window]\npast_s = 600.0\n",                      # prekeys would be deleted inside the window
    'clock_policy = "sometimes"\n',
    "max_request_bytes = 100\n",
    "[prekeys]\nrotate_every_s = 7200\nvalid_for_s = 3600\n",
    "unknown = 1\n",
])
def test_bad_settings_are_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        E2ESettings.model_validate(tomllib.loads(text))
