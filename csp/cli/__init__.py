"""Command-line interface (``csp``)."""
