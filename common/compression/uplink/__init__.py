"""Uplink methods: one module each, registered in `prunus.common.compression.UPLINK`."""
