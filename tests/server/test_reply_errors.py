"""A round's failed and rejected replies reach the console once per kind of
failure, on one line; every reply's full error goes to run.log."""

from __future__ import annotations

import logging

import pytest

from prunus.common.payload import Content, MetricMap
from prunus.server import reply_errors
from prunus.server.intake import Intake
from prunus.server.ledger import Ledger
from prunus.server.transport import Reply

# Ray's text for an actor killed mid-call, as Flower's worker wraps it (3 KB in the report; shortened)
ACTOR_DIED = ("<class 'ray.exceptions.ActorDiedError'>:<'The actor died unexpectedly before finishing this task.\n"
              "\tclass_name: ClientAppActor\n\tactor_id: 5c2d0f\n\tpid: 4242\n\tnamespace: 7e1\n\tip: 10.0.0.2\n"
              "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR "
              + "Worker exit detail: ... " * 120 + "'>")
STATE = ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. "
         "Message: StateError: client state: residual 'item_embedding.weight.val' holds an entry of 1e+30'>")


@pytest.mark.parametrize(("reason", "kind", "message"), [
    (ACTOR_DIED, "ActorDiedError", "The actor died unexpectedly before finishing this task."),
    (STATE, "StateError", "client state: residual 'item_embedding.weight.val' holds an entry of 1e+30"),
    ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ClientAppException occurred. "
     "Message: broke'>", "ClientAppException", "broke"),  # Flower's own worker drops the type
    ("InjectedCrash: injected crash of partition 3 in round 2", "InjectedCrash", "injected crash of partition 3"),
    ("no reply within the round timeout (5 s)", "no reply within the round timeout (5 s)", "no reply within"),
    ("unreadable reply: bad record", "unreadable reply", "unreadable reply: bad record"),
    ("", "no reason given", ""),
], ids=["ray", "client app", "flower's worker", "in process", "timeout", "unreadable", "empty"])
def test_the_kind_of_a_failure_is_read_from_either_engines_error(reason, kind, message):
    found_kind, found_message = reply_errors.cause(reason)
    assert found_kind == kind and reply_errors.first_line(found_message).startswith(message)


def test_one_console_line_per_kind_of_failure_and_every_error_in_full_in_the_log(caplog):
    """16 messages of a dead actor's batch and two hostile states: two
    warnings, each one line, no Ray text beyond its first line; the full
    texts at INFO (run.log only: `common.logs` gives the console WARNING and up)."""
    problems = [(p, ACTOR_DIED) for p in range(16)] + [(20, STATE), (21, STATE)]
    with caplog.at_level(logging.INFO, logger="prunus"):
        reply_errors.report(7, "train", "failed", problems)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "round 7: 16 train replies failed (partitions 0, 1, 2, 3, 4, 5 and 10 more): ActorDiedError: The actor died "
        "unexpectedly before finishing this task.; details in run.log",
        "round 7: 2 train replies failed (partitions 20, 21): StateError: client state: residual "
        "'item_embedding.weight.val' holds an entry of 1e+30; details in run.log"]
    assert all("\n" not in line and len(line) < 300 for line in warnings)
    details = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(details) == 18 and details[0] == f"round 7: train reply of partition 0 failed: {ACTOR_DIED}"


def test_intake_tells_failed_and_rejected_replies_once_per_kind_a_round(caplog):
    intake = Intake(Ledger(), 100)
    replies = [Reply(p, p, None, ACTOR_DIED) for p in range(3)] + [Reply(9, 9, None, "no reply within the round "
                                                                        "timeout (5 s)")]
    replies += [Reply(p, p, Content({"metrics": MetricMap({"num-examples": 1})})) for p in (4, 5)]  # not asked

    def check(reply: Reply) -> None:
        raise AssertionError("only asked partitions are checked")

    with caplog.at_level(logging.INFO, logger="prunus"):
        assert intake.collect(2, "train", replies, [0, 1, 2, 9], check) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(":")[1].strip() for w in warnings] == [
        "3 train replies failed (partitions 0, 1, 2)", "1 train reply failed (partition 9)",
        "2 train replies rejected (partitions 4, 5)"]
    assert "ReplyError: partition 4 was not asked in this round" in warnings[2]
    entry = intake.ledger.round(2)
    assert entry.failures == 4 and entry.rejected == 2
