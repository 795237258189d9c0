"""Sandboxes on worker machines: the NATS wire schema, the worker agent and the remote executor."""
