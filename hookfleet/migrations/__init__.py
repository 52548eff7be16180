"""Ordered SQL migrations, applied by `hookfleet db migrate` (see hookfleet/db.py)."""
