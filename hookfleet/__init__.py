"""hookfleet: outbound webhook delivery fleet on Kafka. This package is the shared runtime and the CLI."""

import logging

__version__ = "0.1.0"
USER_AGENT = f"hookfleet/{__version__}"

# A library never prints on its caller's stderr by itself (EventPublisher runs inside product services):
# without logging configured by the application, hookfleet's log lines go nowhere. Roles configure it.
logging.getLogger(__name__).addHandler(logging.NullHandler())
