"""Attestation: pure functions that decide whether a credential proves an identity. No I/O."""
