"""Atheris fuzz targets (`make fuzz`): the gateway's uplink path, the device's CBOR decoder
and the device's downlink handlers. See docs/reliability.md."""
