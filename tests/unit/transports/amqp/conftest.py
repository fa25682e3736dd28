"""Hypothesis profiles for the AMQP driver tests (STYLE §3.4 habit 4): `fast` in CI,
`deep` before a release (HYPOTHESIS_PROFILE=deep pytest tests/unit/transports/amqp)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("fast", max_examples=100)
settings.register_profile("deep", max_examples=100_000)
if "HYPOTHESIS_PROFILE" in os.environ:
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
