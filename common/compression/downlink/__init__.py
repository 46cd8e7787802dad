"""Downlink (broadcast) methods: one module each, registered in `prunus.common.compression.DOWNLINK`."""
