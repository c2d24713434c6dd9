"""Alert engine, notification outbox and channels."""
