"""Child-process entry points for the crash tests (run with `python -m`, killed with SIGKILL)."""
