"""Temporal activities: thin adapters that translate payloads, heartbeat, and call the backends."""
