"""Library and CLI that product services use to publish events to webhooks.events."""
