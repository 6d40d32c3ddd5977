"""aiohttp is imported only when the HTTP API is on: the CLI, the daemon and the wiring do not pull it in."""

from __future__ import annotations

import subprocess
import sys


def test_aiohttp_is_not_imported_by_the_daemon_modules() -> None:
    probe = ("import sys, edged.cli, edged.daemon, edged.http_service, edged.transports.http, "
             "edged.transports.http.settings, edged.commands.api_keys; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_the_key_file_name_is_the_one_the_cli_writes() -> None:
    from edged import http_service
    from edged.crypto import api_keys

    assert http_service.API_KEYS_FILE == api_keys.API_KEYS_FILE
