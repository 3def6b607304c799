"""The ``hcjax`` command line (``hcjax train``, ``hcjax linear``)."""

from hcjax.cli.main import main

__all__ = ["main"]
