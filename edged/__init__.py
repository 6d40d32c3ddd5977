"""edged: an inference daemon for edge devices."""

import os

# Kept in step with pyproject.toml by a test; importlib.metadata would cost ~30 ms at every start.
__version__ = "0.1.0"

# pydantic scans every installed package's entry points for plugins on its first model (~20 ms of
# each start on a 2-core x86, more on a Pi's SD card); edged uses none. An explicit setting wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
