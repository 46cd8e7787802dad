"""The final global model on disk: one self-describing payload per tensor in an .npz.

`save_model` writes a model in a served codec (`SERVED_CODECS`), so a model
can be served in fewer bytes than it was trained in:

* ``fp32``: each tensor's non-zeros, exact (`common.codec`), so a pruned model
  is as small as the pruning made it. Every run saves so.
* ``fp16``: the same at float16 values (relative error at most 2^-11).
* ``int8`` / ``int4``: each table (a 2-D tensor whose rows hold 2 or more
  values: an item table, an MLP's weights) as a row block
  (`common.codec_rows`): a float16 scale per row (per item) and a code per
  value, rounded to the *nearest* of 255 / 15 levels (error at most half a
  step, the step being the row's max |value| / 127 or / 7). The broadcast's
  int4 rounds stochastically so clients' decodes average to the model; a
  served model is quantised once, where the nearest step errs half as much.
  A row block is dense: a pruned table's zeros stay exact zeros but are
  stored as codes.
  Biases and scalars (one value a row or fewer) are kept at fp16: a row scale
  for a single value costs more than the value does in fp16, and one scale
  over a whole bias vector would round every item's bias (its popularity,
  which decides much of a top-10) to a step of max |bias| / 7 at int4; at
  fp16 they are about 3% of an int8 item table's bytes.

Each payload names its format in its first bytes (``PRSP``: `common.codec`,
whose header holds the shape and value codec; ``PRRQ``: a row block, whose
header holds the bits and the (rows, cols) shape), so `load_model` decodes any
of them, and any file saved before served codecs existed, with no side table.
A model file is untrusted input: `load_model` raises `ModelFileError` unless
every entry is a well-formed payload of a finite float32 tensor (the payload
decoders check lengths, codes, scales and values, lengths before allocating). Whether the
tensors are the ones a config's model has is `simulations.recommend.check_model`'s
test. The file holds no pickled objects.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from prunus.common.codec import CodecError, decode, encode
from prunus.common.codec_rows import BLOCK_MAGIC, block_header, pack_rows, quantise_rows, unpack_rows
from prunus.common.params import Params
from prunus.common.update import nonzeros, to_dense

MODEL_FILE = "model.npz"
ROW_BITS = {"int8": 8, "int4": 4}  # the row-block codecs and their bits
SERVED_CODECS = ("fp32", "fp16", *ROW_BITS)


class ModelFileError(ValueError):
    """A model file that cannot be read as a saved model; the message says why."""


def check_codec(codec: str) -> str:
    """`codec` if it is a served codec, else a ValueError naming the choices."""
    if codec not in SERVED_CODECS:
        raise ValueError(f"served codec {codec!r}: expected one of {', '.join(SERVED_CODECS)}")
    return codec


def save_model(out: Path, params: Params, prunable: list[str], codec: str = "fp32") -> dict[str, float | str]:
    """Write `out/model.npz` in served codec `codec`; return its size next to
    the dense size and the sparsity of the `prunable` tensors.

    ValueError if a value lies beyond what the codec carries (float16's range)."""
    check_codec(codec)
    payloads = {name: np.frombuffer(encode_tensor(name, value, codec), dtype=np.uint8)
                for name, value in params.items()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILE
    np.savez(path, **payloads)
    tables = [v for n, v in params.items() if n in prunable]
    zeros = sum(int(v.size - np.count_nonzero(v)) for v in tables)
    total = sum(v.size for v in tables)
    return {
        "file": MODEL_FILE,
        "codec": codec,
        "file_bytes": path.stat().st_size,
        "dense_fp32_bytes": int(sum(v.size * 4 for v in params.values())),
        "nonzeros": int(sum(np.count_nonzero(v) for v in params.values())),
        "sparsity": zeros / total if total else 0.0,
    }


def encode_tensor(name: str, value: np.ndarray, codec: str) -> bytes:
    """One tensor's payload in `codec`: a row block for a table at int8/int4, else its non-zeros."""
    try:
        if codec in ROW_BITS and value.ndim == 2 and value.shape[1] >= 2:
            bits = ROW_BITS[codec]
            return pack_rows(*quantise_rows(value, bits), bits)
        return encode(*nonzeros(value), value_codec="fp32" if codec == "fp32" else "fp16")
    except ValueError as err:
        raise ValueError(f"tensor {name!r} at {codec}: {err}") from None


def load_model(path: Path) -> Params:
    """Dense float32 arrays back from a saved model, in whichever codec it was saved.

    ModelFileError unless the file is an .npz of well-formed payloads of finite tensors."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ModelFileError(f"{path}: not a readable model file ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ModelFileError(f"{path}: a single array, not a model's .npz archive")
    params = {}
    with archive:
        for name in archive.files:
            try:
                params[name] = decode_tensor(archive[name])
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # CodecError is a ValueError
                raise ModelFileError(f"{path}: tensor {name!r}: {err}") from None
    return params


def decode_tensor(raw: np.ndarray) -> np.ndarray:
    """A payload (1-D uint8, as saved) -> its float32 tensor; CodecError unless well-formed.

    Both decoders return finite values only: `common.codec` refuses non-finite
    values, and a row block's scales are finite float16 and its codes bounded."""
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CodecError(f"a {raw.dtype} array of shape {raw.shape}, expected a 1-D uint8 payload")
    data = raw.tobytes()
    if data[: len(BLOCK_MAGIC)] == BLOCK_MAGIC:
        bits, rows, cols = block_header(data)
        if bits not in ROW_BITS.values() or cols < 2:
            raise CodecError(f"a {bits}-bit row block of {cols} columns; served codecs write 8 or 4 bits, 2+ columns")
        return unpack_rows(data, rows, cols, bits)
    return to_dense(decode(data))
