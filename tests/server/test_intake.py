"""Reply intake: every reply counted, checked and logged, and only what a message can carry taken in."""

import numpy as np

from prunus.common.params import npy_array
from prunus.common.payload import Arrays, Content, MetricMap, NpyArray
from prunus.server.intake import Intake
from prunus.server.ledger import Ledger
from prunus.server.transport import Reply


def test_a_reply_no_message_can_carry_is_rejected_uncounted_and_counts_as_its_partitions_answer():
    """A content Flower's records do not hold (here an array of str data) made
    the byte count raise TypeError out of the round; it is now that reply's
    rejection, with nothing counted, and the partition's one reply."""
    intake = Intake(Ledger(), 100)
    good = Content({"metrics": MetricMap({"num-examples": 1})})
    honest = npy_array(np.zeros(3, np.uint8))
    uncarried = Content({"arrays": Arrays({"x": NpyArray(honest.dtype, honest.shape, "abc", honest.stype)})})
    replies = [Reply(1, 1, uncarried), Reply(1, 1, good), Reply(2, 2, good)]
    accepted = intake.collect(1, "train", replies, [1, 2], lambda reply: "checked")
    assert [(c.reply.partition, c.value) for c in accepted] == [(2, "checked")]
    entry = intake.ledger.round(1)
    assert entry.rejected == 2
    assert [(r.partition, r.status, r.uplink_bytes > 0) for r in intake.ledger.replies] == [
        (1, "rejected", False), (1, "rejected", True)]
    assert entry.uplink_bytes == sum(c.sent for c in accepted) + intake.ledger.replies[1].uplink_bytes
