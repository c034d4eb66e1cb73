"""The ``os2d`` command line (entry point :func:`os2d.apps.cli.main.main`)."""
