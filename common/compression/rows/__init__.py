"""Row selections: one module each, registered in `prunus.common.compression.ROWS`."""
