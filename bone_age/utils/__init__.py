"""Shared plumbing of every command: errors and exit codes, console output, atomic outputs,
optional extras."""
