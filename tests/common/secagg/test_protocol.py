"""Secure aggregation, one round end to end: the server gets exactly the ring
sum of the inputs of the clients that sent one, with clients dropping at any
exchange; too few left: the round is abandoned; hostile input: refused."""

import numpy as np
import pytest

from prunus.common.secagg import protocol
from prunus.common.secagg.protocol import ProtocolError, RoundAbandoned, RoundSetup, ServerRound
from prunus.common.secagg.ring import Ring

RING = Ring(bits=32, clip=1.0, max_clients=64)
LENGTH = 50  # ring elements in each input


def _setup(n=30, degree=12, threshold=6, server_round=3) -> RoundSetup:
    return RoundSetup(server_round, 7, tuple(range(100, 100 + n)), degree, threshold, RING)


def _run(setup, inputs, drop_before_shares=(), drop_before_input=(), drop_before_answer=(), tamper=None):
    """Every exchange of one round; returns (server's total, who is in it)."""
    server, mine = ServerRound(setup, LENGTH), {}
    for p in setup.clients:
        mine[p], public = protocol.advertise(p)
        server.take_keys(p, *public)
    for p in setup.clients:
        if p not in drop_before_shares:
            server.take_shares(p, protocol.share_keys(setup, mine[p], server.peers_of(p)))
    for p in server.shares:
        if p not in drop_before_input:
            held = server.routed_to(p)
            if tamper:
                held = tamper(p, held)
            server.take_input(p, protocol.masked_input(setup, mine[p], held, inputs[p]))
    for p in server.inputs:
        if p not in drop_before_answer:
            server.take_answer(p, protocol.unmask(setup, mine[p], *server.unmask_request(p)))
    return server.total()


def _inputs(setup, seed=0):
    rng = np.random.default_rng(seed)
    return {p: rng.integers(0, RING.levels + 1, LENGTH, dtype=np.uint64) for p in setup.clients}


def _plain_sum(inputs, members):
    return np.sum([inputs[p] for p in members], axis=0, dtype=np.uint64) & np.uint64(RING.mask)


def test_without_dropouts_the_sum_is_exact():
    setup = _setup()
    inputs = _inputs(setup)
    total, members = _run(setup, inputs)
    assert members == list(setup.clients)
    np.testing.assert_array_equal(total, _plain_sum(inputs, members))


@pytest.mark.parametrize("stage", ["drop_before_shares", "drop_before_input", "drop_before_answer"])
def test_with_a_fifth_of_the_clients_dropping_the_sum_is_still_exact(stage):
    setup = _setup()
    inputs = _inputs(setup, 1)
    gone = set(np.random.default_rng(2).choice(setup.clients, size=len(setup.clients) // 5, replace=False).tolist())
    total, members = _run(setup, inputs, **{stage: gone})
    expected = [p for p in setup.clients if stage == "drop_before_answer" or p not in gone]  # an input sent counts
    assert members == expected
    np.testing.assert_array_equal(total, _plain_sum(inputs, members))


def test_the_masked_inputs_alone_say_nothing_of_an_input():
    setup = _setup(n=6, degree=4, threshold=3)
    server, mine = _through(setup, 2)
    zeros = np.zeros(LENGTH, np.uint64)
    masked = protocol.masked_input(setup, mine[100], server.routed_to(100), zeros)
    assert np.count_nonzero(masked) > 0.9 * LENGTH  # an all-zero input looks uniform


def test_too_many_dropouts_abandon_the_round_instead_of_a_wrong_sum():
    setup = _setup(n=10, degree=4, threshold=4)
    inputs = _inputs(setup)
    with pytest.raises(RoundAbandoned):
        _run(setup, inputs, drop_before_answer=set(setup.clients[:8]))


def test_a_tampered_sealed_share_is_refused_by_its_recipient():
    setup = _setup(n=8, degree=4, threshold=3)

    def tamper(p, held):
        if p == 103:
            sender = next(iter(held))
            held = {**held, sender: held[sender][:-1] + bytes([held[sender][-1] ^ 1])}
        return held

    with pytest.raises(ProtocolError, match="does not open"):
        _run(setup, _inputs(setup), tamper=tamper)


def test_a_wrong_share_in_an_unmask_answer_is_passed_over_or_abandons_never_a_wrong_sum():
    setup = _setup(n=12, degree=6, threshold=3)
    inputs = _inputs(setup)
    server, mine = _through(setup, 3, inputs)
    liar = setup.clients[0]
    for p in setup.clients:
        answer = protocol.unmask(setup, mine[p], *server.unmask_request(p))
        if p == liar:
            answer = {q: bytes(66) if i == 0 else share for i, (q, share) in enumerate(answer.items())}
        server.take_answer(p, answer)
    total, members = server.total()
    np.testing.assert_array_equal(total, _plain_sum(inputs, members))


def _through(setup: RoundSetup, stage: int, inputs: dict | None = None):
    """A round's server and clients, every client through `stage` exchanges (0 to 3)."""
    server, mine = ServerRound(setup, LENGTH), {}
    for p in setup.clients if stage >= 1 else ():
        mine[p], public = protocol.advertise(p)
        server.take_keys(p, *public)
    for p in setup.clients if stage >= 2 else ():
        server.take_shares(p, protocol.share_keys(setup, mine[p], server.peers_of(p)))
    for p in setup.clients if stage >= 3 else ():
        values = np.zeros(LENGTH, np.uint64) if inputs is None else inputs[p]
        server.take_input(p, protocol.masked_input(setup, mine[p], server.routed_to(p), values))
    return server, mine


def _server_at(stage: int) -> ServerRound:
    """A server of an 8-client round through `stage` exchanges."""
    return _through(_setup(n=8, degree=4, threshold=3), stage)[0]


@pytest.mark.parametrize(("stage", "call", "match"), [
    (0, lambda s: s.take_keys(100, b"x" * 31, b"y" * 32, b"z" * 32), "not 32 bytes"),
    (0, lambda s: s.take_keys(999, b"x" * 32, b"y" * 32, b"z" * 32), "not .or no longer. expected"),
    (1, lambda s: s.take_keys(100, b"x" * 32, b"y" * 32, b"z" * 32), "not .or no longer. expected"),  # a replay
    (1, lambda s: s.take_shares(101, {}), "not for exactly the neighbours"),
    (1, lambda s: s.take_shares(101, {q: b"x" * 10 for q in s.peers_of(101)}), "not 160 bytes"),
    (2, lambda s: s.take_input(100, np.zeros(3, np.uint64)), "not 50 ring elements"),
    (2, lambda s: s.take_input(100, np.full(50, 2**40, np.uint64)), "outside the 32-bit ring"),
    (2, lambda s: s.take_input(100, np.zeros(50, np.float64)), "not 50 ring elements"),
    (3, lambda s: s.take_answer(100, {}), "not for exactly the clients asked"),
    (3, lambda s: s.take_answer(100, dict.fromkeys(sum(s.unmask_request(100), []), b"x")), "not 66 bytes"),
])
def test_hostile_protocol_messages_are_refused_with_their_reason(stage, call, match):
    server = _server_at(stage)
    with pytest.raises(ProtocolError, match=match):
        call(server)


def test_a_client_reveals_no_secret_twice_and_not_below_the_threshold():
    setup = _setup(n=8, degree=4, threshold=4)
    mine, public = protocol.advertise(100)
    with pytest.raises(RoundAbandoned):
        protocol.share_keys(setup, mine, {})
    mine.held = {101: b"", 102: b""}
    with pytest.raises(ProtocolError, match="both"):
        protocol.unmask(setup, mine, [101], [101])
    with pytest.raises(RoundAbandoned):
        protocol.unmask(setup, mine, [101], [102])


LOW_ORDER = {"the all-zero point": bytes(32), "the point 1": (1).to_bytes(32, "little")}


@pytest.mark.parametrize("which", ["c", "s"])
@pytest.mark.parametrize("point", LOW_ORDER.values(), ids=list(LOW_ORDER))
def test_a_public_key_no_agreement_can_use_is_refused_before_it_reaches_a_neighbour(point, which):
    """The server took any 32 bytes as a key and forwarded them: each neighbour
    of a client that advertised the all-zero point then failed on its agreement
    (a ValueError), one client knocking its neighbours out of the round."""
    server = _server_at(0)
    c, s = (point, b"y" * 32) if which == "c" else (b"x" * 32, point)
    with pytest.raises(ProtocolError, match=f"public key {which}"):
        server.take_keys(100, c, s, b"z" * 32)
    assert 100 not in server.keys
    server.take_keys(100, b"x" * 32, b"y" * 32, b"z" * 32)  # usable keys still are


def test_a_neighbours_unusable_key_is_a_protocol_error_for_the_client():
    """What a server failed to refuse is the client's documented error, not a ValueError."""
    setup = _setup(n=8, degree=4, threshold=3)
    server, mine = _through(setup, 2)
    peer = next(iter(server.routed_to(100)))
    c, s = mine[100].peers[peer]
    with pytest.raises(ProtocolError, match=f"public key of client {peer}"):
        protocol.share_keys(setup, protocol.advertise(100)[0], {**server.peers_of(100), peer: (bytes(32), s)})
    mine[100].peers[peer] = (c, bytes(32))  # the key its mask with `peer` comes from
    with pytest.raises(ProtocolError, match=f"public key of client {peer}"):
        protocol.masked_input(setup, mine[100], server.routed_to(100), np.zeros(LENGTH, np.uint64))
