"""Operator use cases behind the CLI and the dashboard: replay, purge, usersig, overview."""
