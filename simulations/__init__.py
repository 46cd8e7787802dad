"""The `prunus` command line: simulate, centralized, reports."""
