"""Defences of what a reply reveals: one module each, registered in `prunus.common.compression.DEFENCES`."""
