"""Contributor and installer tools: flash.py (the `edgekeep-flash` command), flashlib,
virtual_device, ensure_system.py."""
