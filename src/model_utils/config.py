"""Model-zoo style configuration: YAML files with `base:` inheritance, overridden by flags.

    python train.py --config_path configs/ssd/ssd300.yaml --epoch_size 2 --optim.lr 0.1

- `base: [a.yaml, b.yaml]` merges the listed files first (paths relative to the file that
  names them); later files and the file itself win. Nested mappings merge key by key.
- Keys are declared, with their defaults, by the files of a `_base_` folder (and by a file
  with no `base:`, the root of its own chain). Every other file may only set declared keys,
  with values of the declared type: a misspelt key is an error naming the file, the line and
  the closest declared key, before anything is built.
- Every flag must name a key that exists (dotted for nested keys); values are parsed as YAML
  and must keep the type of the default. Unknown keys are errors that name the key.
- Paths in a config may be relative to the working directory or to the config file that set
  them; `Config.path(key)` resolves them and names the key when the file is missing.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
from typing import Any, Iterable

import yaml

from src.errors import ConfigError, MissingFileError  # noqa: F401  (ConfigError is imported from here too)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "default_config.yaml")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 / 5E4 as floats (YAML 1.1 wants a dot: 1.0e-3)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml_load(stream):
    return yaml.load(stream, Loader=_Loader)



class Config:
    """Attribute and item access over a nested dict, remembering where each value came from."""

    def __init__(self, data: dict, origins: dict | None = None, prefix: str = ""):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_origins", origins if origins is not None else {})
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key '{self._prefix}{name}'") from None
        if isinstance(value, dict):
            return Config(value, self._origins, f"{self._prefix}{name}.")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self._data[name] = value

    __getitem__ = __getattr__

    def __contains__(self, name: str) -> bool:
        return name in self._data

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self._data else default

    def to_dict(self) -> dict:
        return _deep_copy(self._data)

    def origin_dir(self, key: str) -> str:
        """Directory of the config file that set `key` (dotted), or the working directory."""
        return self._origins.get(self._prefix + key, os.getcwd())

    def path(self, key: str, must_exist: bool = True, value: str | None = None) -> str:
        """Resolve the path stored under `key`, trying the working directory, then the
        directory of the config file that set it. Raises FileNotFoundError naming the key."""
        value = getattr(self, key) if value is None else value
        if not value:
            raise ConfigError(f"config key '{self._prefix}{key}' is empty but a path is needed")
        value = os.path.expanduser(str(value))
        if os.path.isabs(value):
            candidates = [value]
        else:
            candidates = [os.path.abspath(value), os.path.join(self.origin_dir(key), value)]
        for candidate in candidates:
            if os.path.exists(candidate):
                return os.path.normpath(candidate)
        if must_exist:
            raise MissingFileError(
                f"config key '{self._prefix}{key}' points to '{value}', which does not exist "
                f"(looked at: {', '.join(dict.fromkeys(candidates))})")
        return os.path.normpath(candidates[0])

    def paths(self, key: str, must_exist: bool = True) -> list[str]:
        """Resolve a list of paths under `key` (a single path, or a comma-separated string
        from the command line, counts as a list) like :meth:`path`."""
        value = getattr(self, key)
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value or [])
        items = [v for v in items if v]
        if not items:
            raise ConfigError(f"config key '{self._prefix}{key}' is empty but at least one path is needed")
        return [self.path(key, must_exist, value=v) for v in items]

    def __repr__(self) -> str:
        return f"Config({self._data!r})"


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def _merge(dst: dict, src: dict, origins: dict, origin: str, prefix: str = "") -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, origins, origin, f"{prefix}{key}.")
        else:
            dst[key] = _deep_copy(value)
            _record_origins(value, origins, origin, f"{prefix}{key}")


def _record_origins(value: Any, origins: dict, origin: str, key: str) -> None:
    origins[key] = origin
    if isinstance(value, dict):
        for k, v in value.items():
            _record_origins(v, origins, origin, f"{key}.{k}")


class _ConfigFile:
    """One parsed config file: its own keys, the line of each (dotted) key, and whether it
    declares keys or may only set declared ones."""

    def __init__(self, path: str):
        self.path = path
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            self.data = _yaml_load(text) or {}
            node = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError as e:
            raise ConfigError(f"cannot parse config file {path}: {e}") from e
        if not isinstance(self.data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level")
        self.lines: dict[str, int] = {}
        _record_lines(node, "", self.lines)
        bases = self.data.pop("base", []) or []
        self.bases = [bases] if isinstance(bases, str) else list(bases)
        self.declares = os.path.basename(os.path.dirname(path)) == "_base_" or not self.bases

    def where(self, key: str) -> str:
        """file:line of `key`, the file relative to the working directory when inside it."""
        relative = os.path.relpath(self.path)
        name = self.path if relative.startswith("..") else relative
        line = self.lines.get(key)
        return f"{name}:{line}" if line else name


def _record_lines(node, prefix: str, lines: dict) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, f"{key}.", lines)


def load_yaml(path: str, origins: dict | None = None, _stack: tuple = (), _files: list | None = None) -> dict:
    """Load a YAML config and the files in its `base:` list, merged in order (each parsed file
    is appended to `_files`, for check_declared)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"config file not found: {path}")
    if path in _stack:
        raise ConfigError(f"config inheritance cycle: {' -> '.join(_stack + (path,))}")
    origins = {} if origins is None else origins
    config_file = _ConfigFile(path)
    merged: dict = {}
    here = os.path.dirname(path)
    for base in config_file.bases:
        base_path = base if os.path.isabs(base) else os.path.join(here, base)
        # The recursive call records where each base key came from; the merge must not
        # overwrite that, hence the throwaway origins dict.
        _merge(merged, load_yaml(base_path, origins, _stack + (path,), _files), {}, here)
    _merge(merged, config_file.data, origins, here)
    if _files is not None:
        _files.append(config_file)
    return merged


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "True or False"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__


def _fits(declared: Any, value: Any) -> bool:
    """Whether `value` may replace the declared default (None declares any type)."""
    if declared is None or value is None:
        return True
    if isinstance(declared, bool) or isinstance(value, bool):
        return isinstance(declared, bool) and isinstance(value, bool)
    if isinstance(declared, float):
        return isinstance(value, (int, float))
    if isinstance(declared, int):
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(declared, list):
        return isinstance(value, (list, str))  # one path where a list of paths is declared
    return isinstance(value, type(declared))


def _dotted_keys(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _dotted_keys(value, f"{prefix}{key}.")
    return keys


def check_declared(files: list[_ConfigFile]) -> None:
    """Every key a non-declaring file sets must be declared (by a `_base_` file or a chain's
    root) with a value of the declared type. Errors name the file and line, and the closest
    declared key."""
    declared: dict = {}
    declared_in: dict[str, str] = {}
    for config_file in files:
        if config_file.declares:
            _merge(declared, config_file.data, {}, "")
            declared_in.update({k: config_file.path for k in _dotted_keys(config_file.data)})
    known = sorted(declared_in)
    for config_file in files:
        if config_file.declares:
            continue
        for key in _dotted_keys(config_file.data):
            if key not in declared_in:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{config_file.where(key)}: unknown config key '{key}'{hint}; keys are declared "
                                  "in the configs/_base_ files")
            default, value = declared, config_file.data
            for part in key.split("."):
                default, value = default[part], value[part]
            if not _fits(default, value):
                raise ConfigError(f"{config_file.where(key)}: config key '{key}' expects {_type_name(default)} "
                                  f"(declared {default!r} in {declared_in[key]}), got {value!r}")


def load_config(path: str, origins: dict | None = None) -> dict:
    """`load_yaml`, then `check_declared` over every file of the chain."""
    files: list[_ConfigFile] = []
    data = load_yaml(path, origins, _files=files)
    check_declared(files)
    return data


def _parse_value(key: str, text: str, default: Any) -> Any:
    try:
        value = _yaml_load(text)
    except yaml.YAMLError:
        value = text
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"flag --{key} expects True or False, got '{text}'")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
        raise ConfigError(f"flag --{key} expects a number, got '{text}'")
    if isinstance(default, str):
        return text
    if isinstance(default, list):
        if isinstance(value, list):
            return value
        return [value] if not isinstance(value, str) or "," not in value else \
            [_yaml_load(v) for v in value.split(",")]
    return value


def _set_dotted(data: dict, key: str, text: str, origins: dict) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"unknown config key '{key}' (no '{'.'.join(parts[:i + 1])}' in the config)")
        if i == len(parts) - 1:
            node[part] = _parse_value(key, text, node[part])
            origins[key] = os.getcwd()
        else:
            node = node[part]


def parse_cli(argv: Iterable[str] | None = None, default_config: str = DEFAULT_CONFIG,
              description: str = "") -> Config:
    """Build the config from `--config_path` (default: default_config.yaml) and `--key value` flags."""
    parser = argparse.ArgumentParser(description=description, add_help=True,
                                     epilog="Any config key can be overridden with --key value "
                                            "(nested keys: --section.key value).")
    parser.add_argument("--config_path", default=default_config, help="YAML config file")
    args, rest = parser.parse_known_args(list(argv) if argv is not None else None)
    origins: dict = {}
    data = load_config(args.config_path, origins)
    data["config_path"] = os.path.abspath(args.config_path)
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument '{token}' (flags are --key value)")
        key = token[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(rest) or (rest[i + 1].startswith("--") and not _is_number(rest[i + 1])):
                raise ConfigError(f"flag --{key} needs a value")
            text = rest[i + 1]
            i += 2
        _set_dotted(data, key, text, origins)
    return Config(data, origins)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
