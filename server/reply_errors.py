"""A round's failed and rejected replies, told once per kind of failure.

A reply's error can be long: Ray's message for a dead actor runs to 3 KB,
and when an actor dies every message it held fails with the same text. The
console gets one line per kind of failure per round (how many replies, which
partitions, the first line of one error); `RUN_DIR/run.log` gets every
reply's full error (`common.logs` sends INFO records to the file only).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

log = logging.getLogger("prunus")

SHOWN_PARTITIONS = 6  # partitions named on a console line; the rest counted
FIRST_LINE = 160  # characters of the example error on a console line

# an error as Flower's engine writes it: "<class 'module.Type'>:<'message'>"
_FLOWER = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>\Z", re.S)
# what Flower's ClientAppException puts before the ClientApp's own error
_CLIENT_APP = re.compile(r"\s*Exception ClientAppException occurred\. Message: ", re.S)
# "Type: message", as prunus writes a client's error (`simulations.inprocess`, the client batches)
_TYPED = re.compile(r"([A-Z]\w*): (.*)\Z", re.S)


def cause(reason: str) -> tuple[str, str]:
    """(the kind of failure, its message) of a reply's error text, whichever
    engine wrote it: the exception's type where the text names one, else the
    text before its first colon."""
    kind, message = "", reason.strip()
    flower = _FLOWER.match(message)
    if flower:
        kind, message = flower[1], _CLIENT_APP.sub("", flower[2], count=1).strip()
    typed = _TYPED.match(message)
    if typed:
        kind, message = typed[1], typed[2].strip()
    if not kind:
        kind = message.split(":", 1)[0].splitlines()[0] if message else "no reason given"
    return kind[:80], message


def first_line(text: str) -> str:
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= FIRST_LINE else line[: FIRST_LINE - 3] + "..."


def report(server_round: int, kind: str, status: str, problems: Iterable[tuple[int, str]],
           unit: str = "partition") -> None:
    """Log the round's `status` ("failed", "rejected") replies of `kind`,
    each from a `unit` (a partition; a node before partitions are known):
    each one's full error at INFO, one WARNING line per kind of failure."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for partition, reason in problems:
        log.info("round %d: %s reply of %s %d %s: %s", server_round, kind, unit, partition, status, reason)
        failure, message = cause(reason)
        groups.setdefault(failure, []).append((partition, message))
    for failure, members in groups.items():
        partitions = sorted(p for p, _ in members)
        shown = ", ".join(map(str, partitions[:SHOWN_PARTITIONS]))
        more = f" and {len(partitions) - SHOWN_PARTITIONS} more" if len(partitions) > SHOWN_PARTITIONS else ""
        replies = "reply" if len(members) == 1 else "replies"
        where = f"{unit}{'s' if len(partitions) > 1 else ''} {shown}{more}"
        example = first_line(members[0][1])
        said = example if example.startswith(failure) else f"{failure}: {example}"
        log.warning("round %d: %d %s %s %s (%s): %s; details in run.log", server_round, len(members), kind, replies,
                    status, where, said)
