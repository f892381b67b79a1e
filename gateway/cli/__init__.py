"""The ``gateway`` command line (:mod:`gateway.cli.main`); one module per command group."""
