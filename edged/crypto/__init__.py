"""End-to-end envelope e2e-v1: keys, sealed requests and responses, allow-list, replay cache."""
