"""Webhook management REST API, the settings page, and the API's CLI client."""
