"""Names and sizes shared by the signed documents and the ``[updates]`` settings, apart from manifest.py
so that reading the config does not import the trust and signature code (every start pays for it)."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

GIB: Final = 1024**3
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="short ASCII identifier")]
