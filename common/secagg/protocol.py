"""One round of secure aggregation: the client half and the server half.

Four exchanges, after SecAgg+ (Bell et al. 2020):

1. keys: each sampled client advertises two X25519 public keys, one to seal
   shares with (`c`) and one its pairwise masks come from (`s`), and a
   SHA-256 commitment to its self-mask seed (so that a recovered seed is
   checked, as a recovered `s` key is against its public key);
2. shares: each client that advertised Shamir-shares its self-mask seed and
   its `s` private key among its neighbours that advertised, one sealed pair
   of shares per neighbour (the server routes them and can read none);
3. masked input: each client that shared sends its quantised update plus its
   self-mask plus one pairwise mask per neighbour that shared (`+` towards a
   higher partition, `-` towards a lower one, so each pair cancels);
4. unmask: each client that sent a masked input is told which neighbours did
   too and which dropped after sharing; it reveals the self-seed share of the
   first and the `s`-key share of the second (never both of one client).

The server then removes every survivor's self-mask and, for each client that
dropped after sharing, the pairwise masks its neighbours added towards it;
what is left is exactly the ring sum of the survivors' inputs. Fewer than
`threshold` shares for any of them: `RoundAbandoned`, never a wrong sum.
Malformed input from one client: `ProtocolError` naming it, and that
client is left out of the round from then on.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field

import numpy as np

from prunus.common.secagg import keys, prg, shamir
from prunus.common.secagg.graph import neighbours
from prunus.common.secagg.ring import Ring

SEAL_LABEL, MASK_LABEL = b"seal", b"mask"
MAX_TRIES = 64  # subsets of the revealed shares tried for one secret before the round is abandoned
PAIR_BYTES = 2 * shamir.SHARE_BYTES  # a neighbour's sealed plaintext: self-seed share, s-key share


class ProtocolError(ValueError):
    """One client's protocol message cannot be used; says why."""


class RoundAbandoned(RuntimeError):
    """Too few clients (or shares) are left to recover the round's sum."""


@dataclass(frozen=True)
class RoundSetup:
    """What both halves know of the round before it starts."""

    server_round: int
    seed: int
    clients: tuple[int, ...]  # the sampled partitions, sorted
    degree: int  # neighbours per client
    threshold: int  # shares needed to recover a secret
    ring: Ring

    def graph(self) -> dict[int, list[int]]:
        return neighbours(list(self.clients), self.degree, self.seed, self.server_round)


def _context(setup: RoundSetup, sender: int, recipient: int) -> bytes:
    return f"round {setup.server_round} from {sender} to {recipient}".encode()


def _x(partition: int) -> int:
    return partition + 1  # a Shamir point: nonzero


# ------------------------------------------------------------- client half
@dataclass
class ClientSecrets:
    """What a client keeps between the round's exchanges (in its state home)."""

    partition: int
    c_private: bytes
    s_private: bytes
    self_seed: bytes
    peers: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # neighbour -> (c, s) public keys
    # neighbour -> the key sealing shares between the two (derived once: an agreement costs more than the rest)
    seal_keys: dict[int, bytes] = field(default_factory=dict)
    held: dict[int, bytes] = field(default_factory=dict)  # neighbour -> its shares for this client, opened


def commitment(seed: bytes) -> bytes:
    return hashlib.sha256(b"prunus-secagg seed " + seed).digest()


def advertise(partition: int) -> tuple[ClientSecrets, tuple[bytes, bytes, bytes]]:
    """Exchange 1: fresh keys and seed; the two public keys and the seed's commitment to send."""
    secrets_ = ClientSecrets(partition, keys.new_private(), keys.new_private(), os.urandom(prg.SEED_BYTES))
    return secrets_, (keys.public_of(secrets_.c_private), keys.public_of(secrets_.s_private),
                      commitment(secrets_.self_seed))


def share_keys(setup: RoundSetup, mine: ClientSecrets, peers: dict[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
    """Exchange 2: the sealed shares for each neighbour that advertised."""
    expected = set(setup.graph()[mine.partition])
    if not set(peers) <= expected:
        raise ProtocolError(f"keys of clients that are not neighbours: {sorted(set(peers) - expected)[:5]}")
    if len(peers) + 1 < setup.threshold:
        raise RoundAbandoned(f"{len(peers)} neighbours left, {setup.threshold - 1} needed")
    mine.peers = dict(peers)
    xs = [_x(p) for p in sorted(peers)]
    seed_shares = shamir.share(mine.self_seed, setup.threshold, xs)
    key_shares = shamir.share(mine.s_private, setup.threshold, xs)
    seal = keys.Agreement(mine.c_private)
    mine.seal_keys = {p: _agree(seal, p, peers[p][0], SEAL_LABEL) for p in sorted(peers)}
    return {p: keys.seal(mine.seal_keys[p], seed_shares[_x(p)] + key_shares[_x(p)], _context(setup, mine.partition, p))
            for p in sorted(peers)}


def masked_input(setup: RoundSetup, mine: ClientSecrets, held: dict[int, bytes], values: np.ndarray) -> np.ndarray:
    """Exchange 3: `values` (ring elements) masked; `held`: the sealed shares
    routed to this client, one per neighbour that shared (each checked to open)."""
    if not set(held) <= set(mine.peers):
        raise ProtocolError(f"shares from clients that are not neighbours: {sorted(set(held) - set(mine.peers))[:5]}")
    # every share opened now (one that does not is refused now, not at unmasking) and kept opened
    mine.held = {sender: _open_pair(setup, mine, sender, sealed) for sender, sealed in sorted(held.items())}
    ring, masks = setup.ring, keys.Agreement(mine.s_private)
    out = ring.elements(values)  # a new array: the masks are added in place (its dtype wraps modulo 2^bits)
    out += prg.expand(mine.self_seed, len(values), ring)
    for peer in sorted(held):
        mask = prg.expand(_agree(masks, peer, mine.peers[peer][1], MASK_LABEL), len(values), ring)
        if mine.partition < peer:
            out += mask
        else:
            out -= mask
    return ring.elements(out)


def unmask(setup: RoundSetup, mine: ClientSecrets, survivors: list[int], dropped: list[int]) -> dict[int, bytes]:
    """Exchange 4: for each neighbour that sent its input, its self-seed share;
    for each that dropped after sharing, its s-key share. The two lists must
    be disjoint neighbours whose shares this client holds, and at least
    `threshold` survivors in all: a server asking for more learns nothing."""
    if set(survivors) & set(dropped):
        raise ProtocolError("a client named both a survivor and dropped")
    if not set(survivors) | set(dropped) <= set(mine.held):
        raise ProtocolError("shares asked of clients whose shares this client does not hold")
    if len(survivors) + 1 < setup.threshold:
        raise RoundAbandoned(f"{len(survivors) + 1} survivors among this client's neighbours, "
                             f"{setup.threshold} needed")
    out = {peer: mine.held[peer][: shamir.SHARE_BYTES] for peer in sorted(survivors)}
    return out | {peer: mine.held[peer][shamir.SHARE_BYTES:] for peer in sorted(dropped)}


def _agree(agreement: keys.Agreement, peer: int, public: bytes, label: bytes) -> bytes:
    """The key shared with a neighbour; ProtocolError for a public key no agreement can use."""
    try:
        return agreement.with_peer(public, label)
    except ValueError as err:
        raise ProtocolError(f"the public key of client {peer}: {err}") from None


def _open_pair(setup: RoundSetup, mine: ClientSecrets, sender: int, sealed: bytes) -> bytes:
    try:
        key = mine.seal_keys[sender]
        pair = keys.open_sealed(key, sealed, _context(setup, sender, mine.partition))
    except ValueError as err:
        raise ProtocolError(f"the shares of client {sender}: {err}") from None
    if len(pair) != PAIR_BYTES:
        raise ProtocolError(f"the shares of client {sender} have {len(pair)} bytes, not {PAIR_BYTES}")
    return pair


# ------------------------------------------------------------- server half
class ServerRound:
    """The server's view of one round: who is still in at each exchange, the
    routing of sealed shares, and the sum once unmasked. Each `take_*` checks
    one client's message and raises `ProtocolError` (that client is then out)."""

    def __init__(self, setup: RoundSetup, length: int) -> None:
        """`length`: ring elements in each client's input."""
        self.setup, self.length, self.graph = setup, length, setup.graph()
        self.keys: dict[int, tuple[bytes, bytes]] = {}  # U1: advertised
        self.commitments: dict[int, bytes] = {}
        self.shares: dict[int, dict[int, bytes]] = {}  # U2: shared (sender -> recipient -> sealed)
        self.inputs: dict[int, np.ndarray] = {}  # U3: sent a masked input
        self.answers: dict[int, dict[int, bytes]] = {}  # U4: answered the unmask request

    # exchange 1
    def take_keys(self, partition: int, c_public: bytes, s_public: bytes, seed_commitment: bytes) -> None:
        if partition not in self.graph or partition in self.keys:
            raise ProtocolError(f"keys from partition {partition}, not (or no longer) expected")
        for name, key in (("c", c_public), ("s", s_public), ("seed commitment", seed_commitment)):
            if not isinstance(key, bytes) or len(key) != keys.KEY_BYTES:
                raise ProtocolError(f"{name} is not {keys.KEY_BYTES} bytes")
        for name, key in (("c", c_public), ("s", s_public)):  # forwarded to neighbours: each must agree with it
            try:
                keys.check_public(key)
            except ValueError as err:
                raise ProtocolError(f"public key {name}: {err}") from None
        if c_public == s_public or any(c_public in k or s_public in k for k in self.keys.values()):
            raise ProtocolError("a public key reused")
        self.keys[partition] = (c_public, s_public)
        self.commitments[partition] = seed_commitment

    def peers_of(self, partition: int) -> dict[int, tuple[bytes, bytes]]:
        """What a client that advertised gets for exchange 2: its neighbours' keys."""
        return {p: self.keys[p] for p in self.graph[partition] if p in self.keys}

    # exchange 2
    def take_shares(self, partition: int, sealed: dict[int, bytes]) -> None:
        if partition not in self.keys or partition in self.shares:
            raise ProtocolError(f"shares from partition {partition}, not (or no longer) expected")
        if set(sealed) != set(self.peers_of(partition)):
            raise ProtocolError("shares not for exactly the neighbours that advertised")
        size = keys.NONCE_BYTES + PAIR_BYTES + 16
        if any(not isinstance(s, bytes) or len(s) != size for s in sealed.values()):
            raise ProtocolError(f"a sealed share that is not {size} bytes")
        self.shares[partition] = dict(sealed)

    def routed_to(self, partition: int) -> dict[int, bytes]:
        """What a client that shared gets for exchange 3: the shares for it from
        its neighbours that shared (it masks with exactly those)."""
        return {p: self.shares[p][partition] for p in self.graph[partition]
                if p in self.shares and partition in self.shares[p]}

    # exchange 3
    def take_input(self, partition: int, masked: np.ndarray) -> None:
        if partition not in self.shares or partition in self.inputs:
            raise ProtocolError(f"a masked input from partition {partition}, not (or no longer) expected")
        ring = self.setup.ring
        if not (isinstance(masked, np.ndarray) and masked.dtype.kind == "u" and masked.shape == (self.length,)):
            raise ProtocolError(f"a masked input that is not {self.length} ring elements")
        if len(masked) and int(masked.max()) > ring.mask:
            raise ProtocolError(f"a masked input outside the {ring.bits}-bit ring")
        self.inputs[partition] = masked.astype(ring.dtype)

    def unmask_request(self, partition: int) -> tuple[list[int], list[int]]:
        """What a client that sent its input is asked in exchange 4: its
        neighbours that sent theirs, and those that dropped after sharing."""
        held = set(self.routed_to(partition))
        return sorted(held & set(self.inputs)), sorted(held - set(self.inputs))

    # exchange 4
    def take_answer(self, partition: int, answer: dict[int, bytes]) -> None:
        if partition not in self.inputs or partition in self.answers:
            raise ProtocolError(f"an unmask answer from partition {partition}, not (or no longer) expected")
        survivors, dropped = self.unmask_request(partition)
        if set(answer) != set(survivors) | set(dropped):
            raise ProtocolError("an unmask answer not for exactly the clients asked")
        if any(not isinstance(s, bytes) or len(s) != shamir.SHARE_BYTES for s in answer.values()):
            raise ProtocolError(f"a share that is not {shamir.SHARE_BYTES} bytes")
        self.answers[partition] = dict(answer)

    def total(self) -> tuple[np.ndarray, list[int]]:
        """The ring sum of the inputs of the clients in the sum, and who they
        are: those that sent a masked input (their self-masks removed with the
        survivors' shares, the masks towards those that dropped after sharing
        removed with theirs). `RoundAbandoned` when any secret lacks shares."""
        ring, threshold, count = self.setup.ring, self.setup.threshold, self.length
        summed = sorted(self.inputs)
        if len(summed) < threshold:
            raise RoundAbandoned(f"{len(summed)} masked inputs, {threshold} needed")
        total = np.zeros(count, ring.dtype)  # added to in place: its dtype wraps modulo 2^bits
        for p in summed:
            total += self.inputs[p]
            total -= prg.expand(self._secret(p, survived=True), count, ring)
        for gone in sorted(set(self.shares) - set(self.inputs)):
            masks = keys.Agreement(self._secret(gone, survived=False))
            for peer in self.graph[gone]:
                if peer in self.inputs and gone in self.routed_to(peer):  # it masked towards `gone`
                    mask = prg.expand(masks.with_peer(self.keys[peer][1], MASK_LABEL), count, ring)
                    if peer < gone:
                        total -= mask
                    else:
                        total += mask
        return ring.elements(total), summed

    def _secret(self, partition: int, survived: bool) -> bytes:
        """A survivor's self-mask seed or a dropped client's mask key, from the
        shares its neighbours revealed, checked against what it advertised (a
        wrong share is passed over while another `threshold` of them agree)."""
        shares = {_x(holder): answer[partition] for holder, answer in self.answers.items() if partition in answer}
        what = "self-mask seed" if survived else "mask key"
        if len(shares) < self.setup.threshold:
            raise RoundAbandoned(f"the {what} of partition {partition}: {len(shares)} shares, "
                                 f"{self.setup.threshold} needed")
        for chosen in itertools.islice(itertools.combinations(sorted(shares), self.setup.threshold), MAX_TRIES):
            try:
                secret = shamir.combine({x: shares[x] for x in chosen}, self.setup.threshold)
            except ValueError:
                continue
            if (commitment(secret) == self.commitments[partition] if survived
                    else keys.public_of(secret) == self.keys[partition][1]):
                return secret
        raise RoundAbandoned(f"the shares of partition {partition}'s {what} are inconsistent")
