"""Clients of a running daemon, run by users and operators: the Unix socket client and the sealed MQTT client."""
