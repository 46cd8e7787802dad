"""Registries: one list per extension point, which config validation reads.

Adding a compression method is adding its module under
`common/compression/uplink/` (or `downlink/`) with its `register` line: the
package imports every module it holds, and the config's choices are the
registry's names at the moment a value is checked.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import field

import numpy as np
import pytest

from prunus.common import compression
from prunus.common.compression import DEFENCES, DOWNLINK, INDICES, ROWS, UPLINK, VALUES, make
from prunus.common.compression.sparse import SparseUplink
from prunus.common.compression.uplink.lowrank import LowRankOptions
from prunus.common.compression.uplink.threshold import ThresholdOptions
from prunus.common.config import Config, ConfigError, load, positive, section, section_of
from prunus.common.models import MODELS
from prunus.common.pruning import PruneSpec, select
from prunus.common.registry import Registry


# -------------------------------------------------------------- Registry
def test_names_are_in_registration_order_and_entries_are_returned_unchanged():
    widgets: Registry[type] = Registry("widget")

    @widgets.register("zeta")
    class Zeta:
        pass

    alpha = widgets.register("alpha")(int)
    assert alpha is int  # the decorator hands the class back
    assert widgets.names() == ("zeta", "alpha")
    assert widgets.get("zeta") is Zeta and widgets.get("alpha") is int
    assert "zeta" in widgets and "beta" not in widgets


def test_a_name_registered_twice_is_an_error():
    widgets: Registry[int] = Registry("widget")
    widgets.register("one")(1)
    with pytest.raises(ValueError, match="widget 'one' is registered twice"):
        widgets.register("one")(2)
    assert widgets.get("one") == 1  # the first stays


def test_an_unknown_name_is_an_error_naming_the_kind_and_the_choices():
    widgets: Registry[int] = Registry("widget")
    widgets.register("one")(1)
    widgets.register("two")(2)
    with pytest.raises(ValueError, match=r"unknown widget 'three'; expected one of one, two"):
        widgets.get("three")


@pytest.mark.parametrize(("registry", "key"), [(UPLINK, "prune-method"), (DOWNLINK, "downlink-codec"),
                                               (VALUES, "value-codec"), (INDICES, "index-codec"),
                                               (MODELS, "model")])
def test_each_registry_is_named_by_its_config_key(registry, key):
    with pytest.raises(ValueError, match=f"unknown {key} 'nope'"):
        registry.get("nope")


# ------------------------------------------------- discovery by module
@pytest.mark.parametrize(("package", "registry"), [("uplink", UPLINK), ("downlink", DOWNLINK)])
def test_every_module_of_a_method_package_is_imported_and_registers(package, registry):
    """What makes a new module enough: importing `prunus.common.compression`
    imports every module of the package, and every method comes from one."""
    path = importlib.import_module(f"prunus.common.compression.{package}").__path__
    modules = {f"prunus.common.compression.{package}.{m.name}" for m in pkgutil.iter_modules(path)}
    assert modules and all(name in sys.modules for name in modules)
    origins = {registry.get(name).__module__ for name in registry.names()}
    assert origins == modules  # each module registers, and only these do
    for name in registry.names():
        assert registry.get(name).name == name  # the class knows its registered name


def test_the_builtin_methods_are_registered():
    assert {"none", "topk", "topk-global", "threshold", "randomk", "rows"} <= set(UPLINK.names())
    assert {"fp32", "fp16", "int8", "int4", "int2"} <= set(DOWNLINK.names())
    assert {"all", "requested"} <= set(ROWS.names())
    assert {"none", "fill", "ldp"} <= set(DEFENCES.names())
    assert compression.REGISTRIES == {"uplink": UPLINK, "downlink": DOWNLINK, "rows": ROWS, "defence": DEFENCES,
                                      "values": VALUES, "indices": INDICES}


# --------------------------------------------- config reads the registry
class Sketch(SparseUplink):
    """A throwaway uplink method: the first entry of each tensor."""

    name = "sketch"

    @staticmethod
    def select(arrays, spec, density, rng):
        masks = {}
        for tensor, x in arrays.items():
            mask = np.zeros(x.size, dtype=bool)
            mask[:1] = x.ravel()[:1] != 0
            masks[tensor] = mask.reshape(x.shape)
        return masks


@pytest.fixture
def sketch_registered(monkeypatch):
    """`sketch` in UPLINK for one test, as if its module were in uplink/."""
    monkeypatch.setitem(UPLINK._entries, "sketch", Sketch)
    return Sketch


def test_a_registered_method_is_a_valid_prune_method(sketch_registered):
    assert "sketch" in UPLINK.names()
    cfg = Config.of(prune_method="sketch")
    assert cfg.compression.prune_method == "sketch"
    assert load(None, ["prune-method=sketch"]) == cfg
    # and the rest of the code finds it by name
    assert PruneSpec(method="sketch").method == "sketch"
    masks = select({"x": np.arange(1.0, 5.0, dtype=np.float32)}, PruneSpec(method="sketch"), 0.5)
    assert masks["x"].tolist() == [True, False, False, False]
    method = UPLINK.get(cfg.compression.prune_method)(cfg.compression)
    update = method.decode(method.encode({"x": np.arange(1.0, 5.0, dtype=np.float32)}, None,
                                         compression.RoundContext(1, 0, 0)).record, {"x": (4,)})
    assert update["x"].indices.tolist() == [0]


def test_an_unknown_prune_method_is_rejected_naming_the_key_and_the_choices(sketch_registered):
    with pytest.raises(ConfigError, match=r"prune-method: 'sketchy' is not one of .*\bsketch\b"):
        Config.of(prune_method="sketchy")
    with pytest.raises(ConfigError, match="prune-method"):
        load(None, ["prune-method=sketchy"])


def test_an_unregistered_method_is_not_a_choice():
    assert "sketch" not in UPLINK.names()
    with pytest.raises(ConfigError, match="prune-method: 'sketch'"):
        Config.of(prune_method="sketch")
    with pytest.raises(ValueError, match="method must be one of"):
        PruneSpec(method="sketch")


# ------------------------------------------- a method's own settings
@section
class SketchOptions:
    """`sketch`'s own settings: how many leading entries it keeps."""

    sketch_width: int = field(default=1, metadata=positive())


class WideSketch(Sketch):
    """`sketch` with a setting of its own, declared beside it."""

    Options = SketchOptions

    def __init__(self, settings, options: SketchOptions) -> None:
        super().__init__(settings)
        self.options = options


def test_a_registry_lists_the_sections_its_entries_declare():
    widgets: Registry[type] = Registry("widget")
    widgets.register("plain")(Sketch)
    widgets.register("wide")(WideSketch)
    assert widgets.section_of("wide") == "widget.wide"
    assert widgets.sections() == {"widget.wide": SketchOptions}
    assert UPLINK.sections() == {"prune-method.lowrank": LowRankOptions, "prune-method.threshold": ThresholdOptions}


def test_a_method_registered_with_its_own_section_brings_its_keys(monkeypatch):
    with pytest.raises(ConfigError, match="unknown config key 'sketch-width'"):
        load(None, ["sketch-width=3"])
    monkeypatch.setitem(UPLINK._entries, "sketch", WideSketch)
    cfg = load(None, ["prune-method=sketch", "sketch-width=3"])
    assert cfg.methods["prune-method.sketch"] == SketchOptions(sketch_width=3)
    assert section_of("sketch-width") == "prune-method.sketch" and cfg.to_dict()["sketch-width"] == 3
    with pytest.raises(ConfigError, match='sketch-width: must be > 0, got 0 \\(a setting of prune-method = "sketch"\\)'):
        load(None, ["sketch-width=0"])
    method = make(UPLINK, "sketch", cfg)  # as the client and the server build it: its own section handed over
    assert isinstance(method, WideSketch) and method.options.sketch_width == 3 and method.settings is cfg.compression
    assert isinstance(make(UPLINK, "topk", cfg), UPLINK.get("topk"))  # a method without one gets the shared only


@pytest.mark.parametrize(("registry", "field", "key"), [(DOWNLINK, "downlink_codec", "downlink-codec"),
                                                        (VALUES, "value_codec", "value-codec"),
                                                        (INDICES, "index_codec", "index-codec"),
                                                        (MODELS, "model", "model")])
def test_every_registry_backed_key_reads_its_registry(monkeypatch, registry, field, key):
    with pytest.raises(ConfigError, match=key):
        Config.of(**{field: "sketch"})
    monkeypatch.setitem(registry._entries, "sketch", object())
    assert Config.of(**{field: "sketch"}).to_dict()[key] == "sketch"


def test_a_data_set_registered_beside_the_others_is_a_valid_config_choice_and_loads(monkeypatch, tmp_path):
    from prunus.common import datasets
    from prunus.common.config import Config, ConfigError
    from prunus.common.data import generate_synthetic

    entries = dict(datasets.DATASETS._entries)
    monkeypatch.setattr(datasets.DATASETS, "_entries", entries)
    with pytest.raises(ConfigError, match="tiny"):
        Config.of(dataset="tiny", data_dir=str(tmp_path))
    datasets.DATASETS.register("tiny")(lambda d, seed: generate_synthetic(n_users=12, n_items=30, seed=seed))
    split = datasets.load_split(Config.of(dataset="tiny", data_dir=str(tmp_path), eval_negatives=5))
    assert (split.n_users, split.n_items) == (12, 30)
