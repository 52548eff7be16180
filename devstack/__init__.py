"""The local development stack (`hookfleet dev up|down|status`): tooling, not part of the fleet runtime."""
