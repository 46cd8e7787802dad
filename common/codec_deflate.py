"""A lossless stage for byte streams whose symbols are skewed: raw DEFLATE
(zlib, no header or checksum), Huffman coding only.

The 4-bit codes of a trained model's rows are far from uniform (about 3.5
bits of entropy each on ML-1M: most entries lie near zero), and the codes
carry no repeated strings, so Huffman alone gets all of DEFLATE's gain, and
faster. Decoding trusts nothing: the output is bounded by the size the
receiver expects before anything is inflated, so a stream can neither
inflate past it (a decompression bomb) nor end short of it.
"""

from __future__ import annotations

import zlib

from prunus.common.codec_index import CodecError

_WINDOW = -15  # raw DEFLATE: no zlib header or checksum (the message's length frames it)


def deflate(data: bytes) -> bytes:
    """`data` Huffman-coded as one raw DEFLATE stream."""
    packer = zlib.compressobj(9, zlib.DEFLATED, _WINDOW, 9, zlib.Z_HUFFMAN_ONLY)
    return packer.compress(data) + packer.flush()


def inflate(data: bytes, size: int) -> bytes:
    """The `size` bytes a raw DEFLATE stream holds; CodecError unless it is one
    complete stream of exactly `size` bytes with nothing after it."""
    unpacker = zlib.decompressobj(_WINDOW)
    try:
        out = unpacker.decompress(data, size)  # never more than `size` bytes out
    except zlib.error as err:
        raise CodecError(f"undecodable deflate stream: {err}") from None
    if unpacker.unconsumed_tail or not unpacker.eof:
        what = "more" if unpacker.unconsumed_tail or len(out) == size else "fewer"
        raise CodecError(f"deflate stream holds {what} than the {size} bytes expected")
    if unpacker.unused_data:
        raise CodecError(f"{len(unpacker.unused_data)} bytes after the deflate stream")
    if len(out) != size:
        raise CodecError(f"deflate stream holds {len(out)} bytes, expected {size}")
    return out
