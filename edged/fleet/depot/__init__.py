"""The operator and depot side of model updates (runs on the operator's machine or a server)."""
