"""Reading a search-space file: YAML, ``--set`` overrides, and one-sentence errors.

Every problem is reported as one :class:`~zray.errors.ZrayError` sentence of
the form ``FILE: key.path: what was expected, got VALUE`` (or ``--set
KEY=VALUE: ...`` when an override caused it).

    >>> from zray import config
    >>> space = config.load("search_spaces/quickstart.yaml", ["fixed.epochs=2"])  # doctest: +SKIP
    >>> space.default_hyperparameters()["epochs"]                               # doctest: +SKIP
    2
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from zray import hyperparameters
from zray.config.schema import TRAINING_HYPERPARAMETERS, Distribution, SearchSpace, _KeyedError
from zray.errors import ZrayError, first_line, shown
from zray.paths import absolute

__all__ = ["load", "validate", "parse_override", "apply_overrides"]


# What PyYAML's own constructors raise for an explicit tag on a value it cannot take
# (`!!int x`, `!!timestamp x`, `!!float ''`), instead of a YAMLError.
_CONSTRUCTOR_ERRORS = (ValueError, TypeError, AttributeError, IndexError, OverflowError)

# A search space is a few hundred values; anchors and aliases (`&lr`, `*lr`) that
# expand past this many are an alias bomb ("billion laughs"), not a search space.
MAX_EXPANDED_NODES = 100_000


# PyYAML's safe loader on libyaml, its C parser, where PyYAML was built with it (its
# wheels are): the pure-Python scanner takes time growing with the square of the
# nesting, about 1.5 s to refuse a hostile file of 5,000 nested brackets.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; users mean a float. A key given twice
    in one mapping (two ``search:`` blocks) is refused: plain YAML keeps the last
    one and silently drops the first. Aliases that would expand past
    :data:`MAX_EXPANDED_NODES` values, or into themselves, are refused before
    anything is built."""

    def construct_document(self, node):
        _check_expansion(node)  # and every mapping's own keys, as written, before any merge
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)  # `<<: *defaults`: the merged keys first; the mapping's own override them
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key is a {type(key).__name__}; expected plain keys such as fixed or epochs",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _check_unique_keys(node) -> None:
    """A key written twice in one mapping (merged keys, which the mapping's own override, aside)."""
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = (key_node.tag, key_node.value)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key_node.value!r} appears twice (lines {seen[key] + 1} and "
                f"{key_node.start_mark.line + 1}); expected each key once", key_node.start_mark)
        seen[key] = key_node.start_mark.line


def _check_expansion(root) -> None:
    """Refuse a YAML document whose aliases expand past MAX_EXPANDED_NODES or into a cycle.

    Each node's expanded size is counted once (memoised), so a bomb is
    measured in the time of its few hundred written nodes.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias refers to a node that contains it; expected no recursive aliases",
                node.start_mark)
        open_nodes.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            _check_unique_keys(node)
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values; expected a "
                    "search space of ordinary size", node.start_mark)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SearchSpace:
    """Read, override and validate a search-space file; raise ZrayError on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ZrayError(f"{path}: no such file; expected a search-space YAML") from None
    except OSError as exc:
        raise ZrayError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ZrayError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        "expected a search-space YAML saved as UTF-8") from None
    too_deep = ZrayError(f"{path}: invalid YAML (nested too deeply to read); expected a search space of "
                         "ordinary depth")
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        problem = first_line(getattr(exc, "problem", None) or exc)
        if "maximum nesting depth" in problem:  # libyaml's limit (1,000 levels)
            raise too_deep from None
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ZrayError(f"{path}: {where}invalid YAML ({problem})") from None
    except _CONSTRUCTOR_ERRORS as exc:  # a tag such as !!int or !!timestamp on a value it cannot take
        raise ZrayError(f"{path}: invalid YAML ({first_line(exc)}); expected plain values") from None
    except RecursionError:  # building Python objects of a document nested hundreds of levels deep
        raise too_deep from None
    if not isinstance(raw, dict):
        raise ZrayError(f"{path}: expected a mapping of sections (name, model, data, ...), got {type(raw).__name__}")
    applied = apply_overrides(raw, overrides, path)
    space = validate(raw, path, applied)
    # Trials and workers run elsewhere: a relative data.path means "from here".
    data = space.data.model_copy(update={"path": absolute(space.data.path)})
    if ("data", "path") in applied and not any(key[:2] == ("data", "simulate") for key in applied):
        # The file's data.simulate makes data at the data.path the file names. A path given
        # with --set names data that exists (a mistyped one is refused, not filled with a
        # simulation); --set data.simulate.n=N as well simulates there.
        data = data.model_copy(update={"simulate": None})
    return space.model_copy(update={"data": data})


def parse_override(text: str) -> tuple[list[str], Any]:
    """``tune.num_samples=4`` -> (["tune", "num_samples"], 4); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ZrayError(f"--set {text}: expected KEY=VALUE, e.g. --set fixed.epochs=2")
    try:
        parsed = yaml.load(value, Loader=_Loader) if value.strip() else ""
    except (yaml.YAMLError, RecursionError, *_CONSTRUCTOR_ERRORS):
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides, path: Path) -> dict[tuple[str, ...], str]:
    """Apply ``--set`` overrides in place; return {key path: override text} for messages."""
    applied: dict[tuple[str, ...], str] = {}
    for text in overrides:
        keys, value = parse_override(text)
        _check_override_path(raw, keys, text)
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ZrayError(f"--set {text}: {key} is not a section")
        node[keys[-1]] = value
        if keys[0] == "fixed" and len(keys) == 2:
            # Fixing a searched hyperparameter takes it out of the search.
            search = raw.get("search")
            if isinstance(search, dict):
                search.pop(keys[1], None)
        applied[tuple(keys)] = text
    return applied


def _check_override_path(raw: dict, keys: list[str], text: str) -> None:
    """An override must name a key the schema knows (or a known hyperparameter)."""
    model: type[BaseModel] | None = SearchSpace
    for depth, key in enumerate(keys):
        if model is None:
            return
        fields = model.model_fields
        if key not in fields:
            known = list(fields)
            raise ZrayError(f"--set {text}: unknown key {'.'.join(keys[: depth + 1])}{_suggest(key, known)}")
        if model is SearchSpace and key in ("fixed", "search"):
            if len(keys) < 2:
                raise ZrayError(f"--set {text}: name a hyperparameter, e.g. --set {key}.epochs=2")
            if key == "fixed":
                _check_hyperparameter_name(raw, keys[1], text)
                return
            if keys[1] not in (raw.get("search") or {}):
                known = sorted(raw.get("search") or {})
                raise ZrayError(
                    f"--set {text}: search.{keys[1]} is not in this file's search space"
                    f"{_suggest(keys[1], known)}"
                )
            model = Distribution
            keys_left = keys[2:]
            if keys_left and keys_left[0] not in Distribution.model_fields:
                raise ZrayError(
                    f"--set {text}: unknown key {keys_left[0]}{_suggest(keys_left[0], list(Distribution.model_fields))}"
                )
            return
        annotation = fields[key].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            args = getattr(annotation, "__args__", ())
            model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None and depth < len(keys) - 1:
            raise ZrayError(f"--set {text}: {'.'.join(keys[: depth + 1])} takes a value, not sub-keys")


def _check_hyperparameter_name(raw: dict, name: str, text: str) -> None:
    model_name = raw.get("model")
    known = _known_hyperparameters(model_name)
    if known is not None and name not in known:
        raise ZrayError(
            f"--set {text}: {name!r} is not a hyperparameter of model {model_name!r}{_suggest(name, sorted(known))}"
        )


def _known_hyperparameters(model_name: Any) -> dict[str, Any] | None:
    from zray.models import available_models, model_hyperparameters

    if not isinstance(model_name, str) or model_name not in available_models():
        return None
    return {**TRAINING_HYPERPARAMETERS, **model_hyperparameters(model_name)}


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; expected one of: {', '.join(candidates)}" if candidates else ""


def validate(raw: dict, path: Path, overrides: dict[tuple[str, ...], str] | None = None) -> SearchSpace:
    """Validate a loaded mapping; the first problem becomes one ZrayError sentence."""
    overrides = overrides or {}
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, raw, path, overrides) from None
    _check_semantics(space, path, overrides)
    return space


def _where(path: Path, loc: tuple, overrides: dict[tuple[str, ...], str]) -> str:
    for key_path, text in overrides.items():
        if tuple(loc[: len(key_path)]) == key_path:
            return f"--set {text}: {'.'.join(map(str, loc))}"
    return f"{path}: {'.'.join(map(str, loc))}"


def _first_error(exc: ValidationError, raw: dict, path: Path, overrides) -> ZrayError:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    kind = err["type"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _KeyedError):
        return ZrayError(f"{_where(path, loc + (cause.key,), overrides)}: {cause.message}")
    if kind == "missing":
        section = loc[-1]
        if len(loc) == 1:
            return ZrayError(f"{path}: required section {section!r} is missing")
        return ZrayError(f"{_where(path, loc, overrides)}: is required but missing")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = list(parent.model_fields) if parent else []
        return ZrayError(f"{_where(path, loc, overrides)}: unknown key{_suggest(loc[-1], known)}")
    message = err["msg"]
    message = message[0].lower() + message[1:]
    message = message.replace("input should be", "expected").replace("value should be", "expected")
    got = err.get("input")
    return ZrayError(f"{_where(path, loc, overrides)}: {message}, got {shown(got)}")


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = SearchSpace
    for i, key in enumerate(loc):
        if model is None:
            return None
        if model is SearchSpace and key == "search":
            return Distribution if i + 2 == len(loc) else None
        field = model.model_fields.get(key)
        if field is None:
            return None
        ann = field.annotation
        args = (ann,) + tuple(getattr(ann, "__args__", ()))
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _check_semantics(space: SearchSpace, path: Path, overrides) -> None:
    """Checks that need the model registry: the model name and hyperparameter names/types."""
    from zray.models import available_models

    models = available_models()
    if space.model not in models:
        raise ZrayError(
            f"{_where(path, ('model',), overrides)}: unknown model {space.model!r}; "
            f"known models: {', '.join(models)}"
        )
    known = space.hyperparameter_defaults()
    for section in ("fixed", "search"):
        for key in getattr(space, section):
            if key not in known:
                raise ZrayError(
                    f"{_where(path, (section, key), overrides)}: not a hyperparameter of model "
                    f"{space.model!r}{_suggest(key, sorted(known))}"
                )
    for key in space.fixed:
        if key in space.search:
            raise ZrayError(
                f"{path}: fixed.{key}: is also in search; a hyperparameter is either fixed or searched"
            )
    for key, value in space.fixed.items():
        problem = _type_problem(known[key], value)
        if problem:
            raise ZrayError(f"{_where(path, ('fixed', key), overrides)}: {problem}, got {shown(value)}")
    for key, dist in space.search.items():
        if dist.type == "categorical":
            for choice in dist.choices:
                problem = _type_problem(known[key], choice)
                if problem:
                    where = _where(path, ("search", key, "choices"), overrides)
                    raise ZrayError(f"{where}: {problem}, got {shown(choice)}")
        elif dist.type == "float" and isinstance(known[key], int) and not isinstance(known[key], bool):
            raise ZrayError(
                f"{_where(path, ('search', key, 'type'), overrides)}: {key} takes whole numbers; "
                "use type: int, got 'float'"
            )
        elif isinstance(known[key], (bool, str)):
            raise ZrayError(
                f"{_where(path, ('search', key, 'type'), overrides)}: {key} takes "
                f"{type(known[key]).__name__} values; use type: categorical, got {dist.type!r}"
            )
    _check_constraints(space, path, overrides)


def _check_constraints(space: SearchSpace, path: Path, overrides) -> None:
    """The declared constraint of each training hyperparameter (zray.hyperparameters),
    applied to fixed values, to every search choice and to both ends of a searched range."""
    for key, value in space.fixed.items():
        problem = hyperparameters.check(key, value)
        if problem:
            raise ZrayError(f"{_where(path, ('fixed', key), overrides)}: {problem}, got {shown(value)}")
    for key, dist in space.search.items():
        if dist.type == "categorical":
            values = [("choices", choice) for choice in dist.choices]
        else:
            values = [("low", dist.low), ("high", dist.high)]
            if dist.type == "int":
                values = [(end, int(v)) for end, v in values]
        if dist.default is not None:
            values.append(("default", dist.default))
        for end, value in values:
            problem = hyperparameters.check(key, value)
            if problem:
                raise ZrayError(f"{_where(path, ('search', key, end), overrides)}: {problem}, got {shown(value)}")


def _type_problem(default: Any, value: Any) -> str | None:
    """Does ``value`` have the type of the hyperparameter whose default is ``default``?"""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected a whole number"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            return "expected a finite number"  # NaN and infinity are never valid
        return None if ok else "expected a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "expected a string"
    return None


