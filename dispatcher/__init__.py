"""Dispatcher role: consumes events and due retries, fans out, delivers signed HTTPS POSTs, routes failures."""
