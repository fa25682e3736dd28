"""A device simulator: our own thin DPS device clients (HTTPS now, MQTT next), used by
`opendps device register` to register a device without the Azure SDKs."""
