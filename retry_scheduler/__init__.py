"""Retry scheduler role: holds failed deliveries in the delay topics until due, then hands them back."""
