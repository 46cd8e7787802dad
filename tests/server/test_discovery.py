"""Partition discovery: every node's claim checked; a bad one is left out, the run goes on."""

import pytest
from flwr.app import ConfigRecord, MessageType, RecordDict

from prunus.server.app import discover_partitions
from prunus.server.ledger import Ledger


class FakeGrid:
    """Answers each discovery query from `claims` (node -> partition-id, or None: the node fails)."""

    def __init__(self, claims: dict, reply) -> None:
        self.claims, self.reply = claims, reply

    def get_node_ids(self):
        return list(self.claims)

    def send_and_receive(self, messages, timeout):
        out = []
        for message in messages:
            node = message.metadata.dst_node_id
            claim = self.claims[node]
            content = None if claim is None else RecordDict({"info": ConfigRecord({"partition-id": claim, "host": "h"})})
            out.append(self.reply(node, content, MessageType.QUERY))
        return out


def test_good_nodes_map_to_their_partitions(make_flower_reply):
    ledger = Ledger()
    assert discover_partitions(FakeGrid({11: 0, 12: 1, 13: 2}, make_flower_reply), 3, ledger) == {0: 11, 1: 12, 2: 13}
    entry = ledger.round(0)
    assert entry.uplink_bytes > 0 and entry.downlink_bytes > 0 and (entry.rejected, entry.failures) == (0, 0)


@pytest.mark.parametrize("claim", ["abc", float("nan"), [1, 2], True, 7, -1, 1])
def test_a_bad_claim_is_left_out_and_the_others_kept(make_flower_reply, claim):
    ledger = Ledger()
    nodes = discover_partitions(FakeGrid({11: 0, 12: 1, 13: claim}, make_flower_reply), 3, ledger)
    assert nodes == {0: 11, 1: 12}  # 1 is a duplicate of node 12's claim: the first keeps it
    assert ledger.round(0).rejected == 1


def test_a_failed_node_is_left_out_and_no_partition_at_all_is_an_error(make_flower_reply):
    ledger = Ledger()
    assert discover_partitions(FakeGrid({11: 0, 12: None}, make_flower_reply), 2, ledger) == {0: 11}
    assert ledger.round(0).failures == 1
    with pytest.raises(RuntimeError, match="no node named a partition"):
        discover_partitions(FakeGrid({11: "x", 12: None}, make_flower_reply), 2, Ledger())


def test_failed_and_bad_nodes_are_told_once_per_kind_of_failure(make_flower_reply, caplog):
    """Three nodes whose actor died and two bad claims: two console lines."""
    import logging

    def reply(node, content, message_type):
        return make_flower_reply(node, content, message_type, error="<class 'ray.exceptions.ActorDiedError'>:<'The "
                                 "actor died unexpectedly before finishing this task.\n\tactor_id: 9f'>")

    claims = {11: 0, 12: None, 13: None, 14: None, 15: 0, 16: "x"}
    with caplog.at_level(logging.INFO, logger="prunus"):
        assert discover_partitions(FakeGrid(claims, reply), 6, Ledger()) == {0: 11}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "discovery" in r.getMessage()]
    assert warnings == [
        "round 0: 3 discovery replies failed (nodes 12, 13, 14): ActorDiedError: The actor died unexpectedly before "
        "finishing this task.; details in run.log",
        "round 0: 2 discovery replies rejected (nodes 15, 16): bad partition-id: partition 0 is already held by node "
        "11; details in run.log"]
