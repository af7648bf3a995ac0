"""Issue 12.1: every option's parameters are reachable from the CLI, and no default is stated twice with
different values (YAML, schema dataclass, class constructor)."""

import importlib
import inspect
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from smoothgen_exp.config import CONF_DIR, GROUPS, SCHEMAS, RunConf, schema_node_name

# Constructor parameters the runner passes itself (never user options): see run.build_parts.
RUNTIME = {"device", "cache_dir"}


def options():
    for group in (*GROUPS, "task"):
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            yield group, path


def schema_default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def plain(value):
    return OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value


def constructor_parameters(cls) -> dict:
    """Named parameters of cls's constructor, following **kwargs into the base classes' constructors."""
    params = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        sig = inspect.signature(vars(klass)["__init__"])
        params.update({p.name: p for p in list(sig.parameters.values())[1:] if p.name not in params
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)})
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return params


def option_node(group: str, path: Path):
    """The option's node with its `_target_`: the file, or in a _global_ preset (models) its group's node."""
    node = OmegaConf.load(path)
    if "_target_" not in node:
        node = node.get(group) if OmegaConf.is_dict(node.get(group)) else None
    return node if node is not None and "_target_" in node else None


def drift(group: str, path: Path) -> list[str]:
    """The problems of one `conf/<group>/<option>.yaml`, as lines (empty when it is clean)."""
    node = option_node(group, path)
    if node is None:
        return []                                   # extends another option (tiny_clip_zero_shot)
    schema = SCHEMAS[node._target_]
    module, name = node._target_.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    params = constructor_parameters(cls)
    known = {f.name: f for f in fields(schema) if f.name != "_target_"}
    where = f"{group}/{path.name}"
    problems = [f"{where}: {cls.__name__}({p}) cannot be set from the CLI (no schema field)"
                for p in params if p not in known and p not in RUNTIME]
    problems += [f"{where}: schema field {k} is not a parameter of {cls.__name__}" for k in known if k not in params]
    for key, f in known.items():
        if key not in params:
            continue
        default, ctor = schema_default(f), params[key].default
        if ctor is not inspect.Parameter.empty and default is not MISSING and ctor != default \
                and not (isinstance(ctor, tuple) and list(ctor) == default):
            problems.append(f"{where}: {key} defaults to {default!r} in the schema and {ctor!r} in {cls.__name__}")
    starts_from = OmegaConf.to_container(OmegaConf.load(path), resolve=False).get("defaults", [])
    if not any(isinstance(d, str) and d.split("@")[0].rsplit("/", 1)[-1] == schema_node_name(schema)
               for d in starts_from):
        problems.append(f"{where}: its defaults list does not start from {schema_node_name(schema)}")
    shared = sum(1 for g, p in options() if g == group and getattr(option_node(g, p), "_target_", None)
                 == node._target_) > 1
    for key in node:
        if key == "_target_" or key not in known:
            continue
        value, default = plain(OmegaConf.to_container(node, resolve=False)[key]), schema_default(known[key])
        if isinstance(value, str) and value.startswith("${"):
            continue                                   # an interpolation: taken from another group
        if value == default:
            problems.append(f"{where}: {key}: {value!r} restates the schema default")
        elif not shared:
            problems.append(f"{where}: {key}: {value!r} differs from the schema default {default!r} "
                            "(the only option of its schema: change the schema)")
    return problems


@pytest.mark.parametrize("group,path", list(options()), ids=lambda v: getattr(v, "name", v))
def test_every_option_has_one_source_of_defaults(group, path):
    assert drift(group, path) == []


def test_the_top_level_defaults_are_the_schema_defaults():
    top = OmegaConf.load(CONF_DIR / "config.yaml")
    for f in fields(RunConf):
        if f.name in top:
            assert plain(top[f.name]) == schema_default(f), f"config.yaml: {f.name} differs from RunConf"


def test_the_drift_check_fails_on_a_planted_mismatch(tmp_path):
    planted = tmp_path / "feature.yaml"
    planted.write_text("_target_: smoothgen_exp.certifiers.feature.FeatureCertifier\nn: 1234\nalpha: 0.001\n")
    problems = drift("certifier", planted)
    assert any("n: 1234 differs from the schema default" in p for p in problems)
    assert any("alpha: 0.001 restates the schema default" in p for p in problems)


def test_a_constructor_default_is_refused_at_import():
    """The schema is the only source: a class that restates (or contradicts) a default does not import."""
    from smoothgen_exp.config import SCHEMAS, configured

    class Mean:                                       # stands in for aggregators.mean.Mean
        def __init__(self, n: int = 7):
            self.n = n

    Mean.__module__, Mean.__qualname__ = "smoothgen_exp.aggregators.mean", "Mean"
    assert "smoothgen_exp.aggregators.mean.Mean" in SCHEMAS
    with pytest.raises(TypeError, match=r"Mean\(n=7\): the default belongs to MeanConf \(100\)"):
        configured(Mean)

    class Plain:
        def __init__(self, n: int):
            self.n = n

    Plain.__module__, Plain.__qualname__ = "smoothgen_exp.aggregators.mean", "Mean"
    built = configured(Plain)
    assert built().n == 100 and built(5).n == 5 and built(n=6).n == 6
    assert str(inspect.signature(built)) == "(n: int = 100)"


def test_a_class_without_a_schema_is_refused():
    from smoothgen_exp.config import configured

    class Orphan:
        def __init__(self):
            pass

    with pytest.raises(TypeError, match="no schema"):
        configured(Orphan)
