"""Key agreement and sealed shares: X25519, HKDF-SHA256 and ChaCha20-Poly1305 from `cryptography`."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

KEY_BYTES = 32
NONCE_BYTES = 12


def new_private() -> bytes:
    """A fresh X25519 private key, raw."""
    return X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_of(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_public(public: bytes) -> None:
    """ValueError unless `public` is a key agreements can use: 32 bytes, and not
    a low-order point (its agreement with every private key is all zeros,
    which X25519 refuses). The server checks what it forwards with this: a key
    that is not one would fail every neighbour it reaches."""
    Agreement(_PROBE).with_peer(public, b"probe")


def agree(private: bytes, public: bytes, label: bytes) -> bytes:
    """A 32-byte key both ends derive alike (`label` keeps a mask seed apart from
    a sealing key); ValueError for a public key that is not one."""
    return Agreement(private).with_peer(public, label)


_PROBE = new_private()  # any private key tells a low-order point (see `check_public`)


class Agreement:
    """One private key's agreements with many peers (the key is loaded once:
    loading it costs more than an exchange)."""

    def __init__(self, private: bytes) -> None:
        self.key = X25519PrivateKey.from_private_bytes(private)

    def with_peer(self, public: bytes, label: bytes) -> bytes:
        if len(public) != KEY_BYTES:
            raise ValueError(f"a public key has {KEY_BYTES} bytes, not {len(public)}")
        try:
            shared = self.key.exchange(X25519PublicKey.from_public_bytes(public))
        except ValueError as err:  # e.g. a low-order point: the agreement gives all zeros
            raise ValueError(f"unusable public key: {err}") from None
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                    info=b"prunus-secagg " + label).derive(shared)


def seal(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Nonce + ChaCha20-Poly1305 ciphertext, bound to `context` (sender, recipient, round)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, context)


def open_sealed(key: bytes, sealed: bytes, context: bytes) -> bytes:
    """The plaintext; ValueError if it was not sealed with `key` for `context`."""
    if len(sealed) < NONCE_BYTES + 16:
        raise ValueError("a sealed share too short to be one")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
    except InvalidTag:
        raise ValueError("a sealed share that does not open (tampered, or not for this client and round)") from None
