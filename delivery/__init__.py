"""The delivery kit: what it takes to send one signed webhook request and describe its outcome.

Not a role: the dispatcher delivers with it, the API's Test and delivery detail use the same code so a test
delivery is byte-for-byte a real one, and the demo signs with it. It imports `schemas/` and `hookfleet/`
only, never a role (docs/architecture.md#delivery-kit).

- `deliverer.py`: `Deliverer.deliver` (one attempt, never raises for what the receiver or the network does)
  and the attempt record built from its result;
- `http1.py`: the HTTP/1.1 client on the event loop's TLS transports (pools per checked address, limits);
- `address_guard.py`: the SSRF guard (pure address checks, the per-URL host check);
- `signing.py`: HMAC and Standard Webhooks signatures, and `request_headers`, the one builder of a
  delivery's headers;
- `outcome.py`: status and error -> outcome; `retry_after.py`: the receiver's `Retry-After`;
- `endpoint.py`: what a delivery needs of a webhook; `wire_json.py`: task and attempt bytes for Kafka.
"""
