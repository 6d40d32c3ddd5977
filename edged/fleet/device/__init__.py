"""The device side of model updates (runs on the board): the update service, downloads, A/B slots, journal."""
