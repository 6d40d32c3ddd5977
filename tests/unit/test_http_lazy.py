"""The HTTP library is imported only when the HTTP API is on; the API never pulls in aiohttp (100+ ms)."""

from __future__ import annotations

import subprocess
import sys


def _loaded(modules: str, prefixes: tuple[str, ...]) -> str:
    probe = (f"import sys, {modules}; "
             f"print(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.strip()


def test_the_http_library_is_not_imported_by_the_daemon_modules() -> None:
    modules = ("edged.cli, edged.daemon, edged.http_service, edged.transports.http, "
               "edged.transports.http.settings, edged.commands.api_keys")
    assert _loaded(modules, ("h11", "aiohttp")) == "[]"


def test_the_http_api_does_not_import_aiohttp() -> None:
    loaded = _loaded("edged.transports.http.app", ("h11", "aiohttp"))
    assert "'h11'" in loaded and "aiohttp" not in loaded


def test_the_key_file_name_is_the_one_the_cli_writes() -> None:
    from edged import http_service
    from edged.crypto import api_keys

    assert http_service.API_KEYS_FILE == api_keys.API_KEYS_FILE
