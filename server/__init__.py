"""The ServerApp: strategy, aggregation, central evaluation and the byte ledger."""
