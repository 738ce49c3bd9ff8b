"""The ``modelport`` command line. Talks to the server only through ``modelport.client``."""

from modelport.cli._app import app, main

__all__ = ["app", "main"]
