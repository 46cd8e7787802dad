"""The ServerApp: the rounds (federation), validation, aggregation, optimisers, evaluation and the byte ledger."""
