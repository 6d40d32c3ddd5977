"""Transports turn bytes into typed requests for the core and events back into bytes; nothing else."""
