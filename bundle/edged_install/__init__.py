"""The bundle's installer: standard library only, because it runs before anything else is installed."""
