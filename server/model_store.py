"""The final global model on disk, in sparse form (codec payloads in an .npz).

A pruned model is stored as its non-zeros, so the served recommender is as
small as the pruning made it; the file holds no pickled objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunus.common.codec import decode, encode
from prunus.common.params import Params
from prunus.common.update import nonzeros, to_dense

MODEL_FILE = "model.npz"


def save_model(out: Path, params: Params, prunable: list[str]) -> dict[str, float]:
    """Write `out/model.npz`; return its size next to the dense size and the
    sparsity of the `prunable` tensors."""
    payloads = {name: np.frombuffer(encode(*nonzeros(value)), dtype=np.uint8) for name, value in params.items()}
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILE
    np.savez(path, **payloads)
    tables = [v for n, v in params.items() if n in prunable]
    zeros = sum(int(v.size - np.count_nonzero(v)) for v in tables)
    total = sum(v.size for v in tables)
    return {
        "file": MODEL_FILE,
        "file_bytes": path.stat().st_size,
        "dense_fp32_bytes": int(sum(v.size * 4 for v in params.values())),
        "nonzeros": int(sum(np.count_nonzero(v) for v in params.values())),
        "sparsity": zeros / total if total else 0.0,
    }


def load_model(path: Path) -> Params:
    """Dense float32 arrays back from a saved model."""
    params = {}
    with np.load(path, allow_pickle=False) as archive:
        for name in archive.files:
            params[name] = to_dense(decode(archive[name].tobytes()))
    return params
