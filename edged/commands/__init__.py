"""Sub-command groups of the edged command line, each with a register(subparsers)."""
