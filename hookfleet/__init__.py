"""hookfleet: outbound webhook delivery fleet on Kafka. This package is the shared runtime and the CLI."""

__version__ = "0.1.0"
USER_AGENT = f"hookfleet/{__version__}"
