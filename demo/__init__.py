"""`hookfleet demo`: the whole fleet locally, a verifying HTTPS receiver, and a live delivery table."""
