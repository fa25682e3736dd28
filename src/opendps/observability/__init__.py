"""Structured logging, Prometheus metrics and the audit trail's formatting."""
