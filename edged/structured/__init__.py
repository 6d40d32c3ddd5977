"""Structured output: JSON answers and tool calls, constrained by a grammar so they cannot be malformed.

The request fields live in `wire`, the supported JSON Schema subset in `schema`, the grammars and their
cache in `grammar`, per-token masking for the engines in `constraint`, tool prompts in `prompting`, and
the answer's shaping and final validation in `shaper`. docs/protocol.md documents the whole feature.
"""
