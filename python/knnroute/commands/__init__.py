"""Production subcommands of the ``knnroute`` CLI: ``fit`` (fit and save a router) and ``serve``."""
