"""The ClientApp: local training, pruning and encoding of what a client sends."""
