"""OpenDPS: a self-hosted IoT Device Provisioning Service, wire-compatible with Azure DPS.

Importing this package has no side effects; `opendps.app.wiring.build` assembles a server.
"""

__version__ = "0.1.0"
