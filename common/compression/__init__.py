"""Compression as plug-ins, in both directions.

* `UPLINK`: how a client turns its update into a reply payload (client half)
  and how the server turns that payload back into a checked update (server
  half); one module per method in `uplink/`.
* `DOWNLINK`: how the server encodes the global model for the broadcast and
  how a client decodes it; one module per method in `downlink/`.
* `DEFENCES`: what a client does to its update so its reply reveals less
  (decoy rows, local DP noise); one module per defence in `defence/`.
* `ROWS`: which item rows a message carries (every row, or the rows each
  client asks for); one module per method in `rows/`.
* `VALUES`, `INDICES`: the codec's value and index codecs (`common.codec`).

Every module of `uplink/`, `downlink/`, `rows/` and `defence/` is imported here, so a method that
registers itself in a new module is known to config validation, `prunus
report` and the tests with no other edit, its own settings (its class's
`Options` section) included. `make` builds a run's method from its config.
See docs/architecture.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

from prunus.common.codec_index import INDEX_CODECS
from prunus.common.codec_values import VALUE_CODECS
from prunus.common.compression.base import (
    BroadcastContext,
    Defence,
    DownlinkMethod,
    Encoded,
    PayloadError,
    RoundContext,
    RowPlan,
    RowSelection,
    UplinkMethod,
)
from prunus.common.registry import Registry

if TYPE_CHECKING:
    from prunus.common.config import Config

UPLINK: Registry[type[UplinkMethod]] = Registry("prune-method")
DOWNLINK: Registry[type[DownlinkMethod]] = Registry("downlink-codec")
ROWS: Registry[type[RowSelection]] = Registry("broadcast-rows")
DEFENCES: Registry[type[Defence]] = Registry("defence")
VALUES: Registry[int] = Registry("value-codec")
INDICES: Registry[int] = Registry("index-codec")
for _name, _code in VALUE_CODECS.items():
    VALUES.register(_name)(_code)
INDICES.register("auto")(0)
for _name, _code in INDEX_CODECS.items():
    INDICES.register(_name)(_code)

REGISTRIES: dict[str, Registry] = {"uplink": UPLINK, "downlink": DOWNLINK, "rows": ROWS, "defence": DEFENCES,
                                   "values": VALUES, "indices": INDICES}


def make(registry: Registry, name: str, cfg: Config) -> Any:
    """`registry`'s method `name` for a run of `cfg`: given the shared
    `compression` section, and its own section where it declares one (`Options`)."""
    method = registry.get(name)
    options = cfg.methods.get(registry.section_of(name))
    return method(cfg.compression) if options is None else method(cfg.compression, options)


for _package in ("uplink", "downlink", "rows", "defence"):
    _path = importlib.import_module(f"{__name__}.{_package}").__path__
    for _module in pkgutil.iter_modules(_path):
        importlib.import_module(f"{__name__}.{_package}.{_module.name}")

__all__ = ["DEFENCES", "DOWNLINK", "INDICES", "REGISTRIES", "ROWS", "UPLINK", "VALUES", "BroadcastContext", "Defence",
           "DownlinkMethod",
           "Encoded", "PayloadError", "RoundContext", "RowPlan", "RowSelection", "UplinkMethod", "make"]
