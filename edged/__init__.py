"""edged: an inference daemon for edge devices."""

# Kept in step with pyproject.toml by a test; importlib.metadata would cost ~30 ms at every start.
__version__ = "0.1.0"
