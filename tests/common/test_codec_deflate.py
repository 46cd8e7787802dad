"""`common.codec_deflate`: raw DEFLATE round trips any bytes, and a stream
that is not exactly the size the receiver expects is refused, without ever
inflating past that size."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prunus.common.codec_deflate import deflate, inflate
from prunus.common.codec_index import CodecError


@given(st.binary(max_size=4000))
def test_any_bytes_round_trip(data):
    assert inflate(deflate(data), len(data)) == data


def test_skewed_symbols_shrink():
    data = bytes([0x77] * 900 + [0x78] * 80 + list(range(20)))  # 4-bit codes mostly near the middle
    assert len(deflate(data)) < len(data) // 3


def test_a_bomb_is_refused_without_inflating_past_the_expected_size():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = bomb.compress(bytes(50_000_000)) + bomb.flush()  # 50 MB of zeros in about 50 KB
    with pytest.raises(CodecError, match="more than the 1000 bytes"):
        inflate(stream, 1000)


@pytest.mark.parametrize("case", ["short", "truncated", "trailing", "garbage", "empty"])
def test_a_stream_of_the_wrong_size_or_form_is_refused(case):
    data = bytes(range(256)) * 4
    stream = deflate(data)
    bad, size = {
        "short": (deflate(data[:-1]), len(data)),
        "truncated": (stream[:-3], len(data)),
        "trailing": (stream + b"\x00", len(data)),
        "garbage": (b"\xff" * 40, len(data)),
        "empty": (b"", len(data)),
    }[case]
    with pytest.raises(CodecError):
        inflate(bad, size)
