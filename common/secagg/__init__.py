"""Secure aggregation (the SecAgg+ family), free of any transport.

The server learns only the sum of a round's updates: each client adds to its
quantised update (`ring`) a self-mask and one pairwise mask per neighbour
(`graph`: a sparse random graph, not all pairs), each expanded from a seed by
a PRG (`prg`); pairwise masks cancel in the sum, and the self-masks are
removed with seeds the survivors reveal. Seeds and the mask keys of clients
that drop are Shamir-shared among neighbours (`shamir`), sealed for each
neighbour with a key from X25519 agreement (`keys`). `protocol` holds the
client and server halves of one round's exchanges.

Primitives come from `cryptography` (X25519, HKDF-SHA256, AES-CTR and
ChaCha20-Poly1305); nothing here is a cipher of its own.
"""
