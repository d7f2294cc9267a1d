"""Tests for src/model_utils/config.py: yaml inheritance, flag overrides, path resolution."""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

from src.model_utils.config import Config, ConfigError, load_yaml, parse_cli  # noqa: E402


def _write(path, text: str) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


BASE_YAML = """\
name: base
epoch_size: 10
lr: 0.1
lr_end: 0.0
run_eval: False
milestones: [3, 6]
a:
  b: 1
  c: keep
  d:
    e: 5
    f: six
"""


@pytest.fixture
def chain(tmp_path):
    """base.yaml <- sub/child.yaml <- grand.yaml (child lives in a subfolder)."""
    base = _write(tmp_path / "base.yaml", BASE_YAML)
    child = _write(tmp_path / "sub" / "child.yaml", "base: [../base.yaml]\nepoch_size: 20\na:\n  b: 2\n  d:\n    e: 7\n")
    grand = _write(tmp_path / "grand.yaml", "base: sub/child.yaml\nlr: 0.01\na:\n  c: changed\n")
    return {"base": base, "child": child, "grand": grand}


# ----------------------------------------------------------------------------- inheritance

def test_child_overrides_one_key_and_merges_nested(chain):
    data = load_yaml(chain["child"])
    assert data["epoch_size"] == 20                      # overridden
    assert data["lr"] == 0.1 and data["name"] == "base"  # inherited
    assert data["a"] == {"b": 2, "c": "keep", "d": {"e": 7, "f": "six"}}   # merged key by key
    assert "base" not in data


def test_grandchild_merges_three_levels(chain):
    data = load_yaml(chain["grand"])
    assert data["lr"] == 0.01
    assert data["epoch_size"] == 20
    assert data["name"] == "base"
    assert data["a"] == {"b": 2, "c": "changed", "d": {"e": 7, "f": "six"}}


def test_later_base_wins_and_file_itself_wins_last(tmp_path):
    _write(tmp_path / "x.yaml", "k: x\nonly_x: 1\n")
    _write(tmp_path / "y.yaml", "k: y\nonly_y: 2\nm: y\n")
    top = _write(tmp_path / "top.yaml", "base: [x.yaml, y.yaml]\nm: top\n")
    data = load_yaml(top)
    assert data == {"k": "y", "only_x": 1, "only_y": 2, "m": "top"}


def test_inheritance_cycle_raises(tmp_path):
    _write(tmp_path / "a.yaml", "base: [b.yaml]\nx: 1\n")
    _write(tmp_path / "b.yaml", "base: [c.yaml]\ny: 1\n")
    _write(tmp_path / "c.yaml", "base: [a.yaml]\nz: 1\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml(str(tmp_path / "a.yaml"))


def test_self_cycle_raises(tmp_path):
    path = _write(tmp_path / "self.yaml", "base: self.yaml\nx: 1\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_yaml(path)


def test_missing_base_file(tmp_path):
    path = _write(tmp_path / "a.yaml", "base: [nope.yaml]\nx: 1\n")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_yaml(path)


def test_scientific_notation_in_yaml_is_a_float(tmp_path):
    path = _write(tmp_path / "a.yaml", "lr: 1e-3\nwd: 4E+5\nplain: 1.5\nname: e5\n")
    data = load_yaml(path)
    assert data["lr"] == pytest.approx(1e-3) and isinstance(data["lr"], float)
    assert data["wd"] == pytest.approx(4e5) and isinstance(data["wd"], float)
    assert data["plain"] == 1.5 and data["name"] == "e5"


# ----------------------------------------------------------------------------- flags

def _cli(chain, *flags):
    return parse_cli(["--config_path", chain["grand"], *flags])


def test_no_flags_gives_merged_config(chain):
    cfg = _cli(chain)
    assert isinstance(cfg, Config)
    assert cfg.lr == 0.01 and cfg.a.b == 2 and cfg["a"]["d"].f == "six"
    assert cfg.config_path == os.path.abspath(chain["grand"])


def test_flags_keep_types(chain):
    cfg = _cli(chain, "--epoch_size", "3", "--lr", "0.5", "--run_eval", "True", "--name", "foo", "--a.b", "9",
               "--a.d.f", "seven")
    assert cfg.epoch_size == 3 and type(cfg.epoch_size) is int
    assert cfg.lr == 0.5 and type(cfg.lr) is float
    assert cfg.run_eval is True
    assert cfg.name == "foo"
    assert cfg.a.b == 9 and cfg.a.c == "changed" and cfg.a.d.e == 7
    assert cfg.a.d.f == "seven"


def test_int_given_to_float_key_becomes_float(chain):
    cfg = _cli(chain, "--lr", "2")
    assert cfg.lr == 2.0 and type(cfg.lr) is float


def test_string_key_keeps_numeric_looking_text(chain):
    cfg = _cli(chain, "--name", "123")
    assert cfg.name == "123"


def test_bool_false(chain):
    cfg = parse_cli(["--config_path", chain["base"], "--run_eval", "False"])
    assert cfg.run_eval is False
    cfg = parse_cli(["--config_path", chain["base"], "--run_eval", "true"])
    assert cfg.run_eval is True


def test_equals_form(chain):
    cfg = _cli(chain, "--epoch_size=4", "--a.d.e=11", "--name=x=y")
    assert cfg.epoch_size == 4 and cfg.a.d.e == 11
    assert cfg.name == "x=y"


def test_config_path_equals_form(chain):
    cfg = parse_cli([f"--config_path={chain['base']}", "--epoch_size", "2"])
    assert cfg.epoch_size == 2 and cfg.lr == 0.1


@pytest.mark.parametrize("text, expected", [("[1, 2, 5]", [1, 2, 5]), ("4,8", [4, 8]), ("7", [7]), ("[]", [])])
def test_list_values(chain, text, expected):
    cfg = _cli(chain, "--milestones", text)
    assert cfg.milestones == expected


@pytest.mark.parametrize("text, expected", [("-1", -1.0), ("-0.25", -0.25), ("-1e-3", -1e-3), ("-2E2", -200.0)])
def test_negative_numbers_as_values(chain, text, expected):
    cfg = _cli(chain, "--lr_end", text, "--epoch_size", "5")
    assert cfg.lr_end == pytest.approx(expected) and isinstance(cfg.lr_end, float)
    assert cfg.epoch_size == 5


@pytest.mark.parametrize("text, expected", [("1e-3", 1e-3), ("5E-4", 5e-4), ("2.5e2", 250.0)])
def test_scientific_notation_flags(chain, text, expected):
    cfg = _cli(chain, "--lr", text)
    assert cfg.lr == pytest.approx(expected) and isinstance(cfg.lr, float)


def test_scientific_notation_for_int_key(chain):
    cfg = _cli(chain, "--epoch_size", "1e2")
    assert cfg.epoch_size == 100 and type(cfg.epoch_size) is int


def test_type_error_names_the_flag(chain):
    with pytest.raises(ConfigError, match="epoch_size") as e:
        _cli(chain, "--epoch_size", "abc")
    assert "abc" in str(e.value)
    with pytest.raises(ConfigError, match="run_eval"):
        _cli(chain, "--run_eval", "maybe")
    with pytest.raises(ConfigError, match=r"a\.b"):
        _cli(chain, "--a.b", "x")


def test_unknown_flag_names_the_key(chain):
    with pytest.raises(ConfigError, match="no_such_key"):
        _cli(chain, "--no_such_key", "1")


def test_unknown_nested_flag_names_the_key(chain):
    with pytest.raises(ConfigError, match=r"a\.zz"):
        _cli(chain, "--a.zz", "1")
    with pytest.raises(ConfigError, match=r"nope\.b"):
        _cli(chain, "--nope.b", "1")
    # descending into a scalar is an unknown key too
    with pytest.raises(ConfigError, match=r"lr\.x"):
        _cli(chain, "--lr.x", "1")


def test_flag_without_value(chain):
    with pytest.raises(ConfigError, match="--epoch_size needs a value"):
        _cli(chain, "--epoch_size")
    with pytest.raises(ConfigError, match="--epoch_size needs a value"):
        _cli(chain, "--epoch_size", "--lr", "0.5")
    with pytest.raises(ConfigError, match="--name needs a value"):
        _cli(chain, "--name", "--lr", "0.5")


def test_stray_positional_argument(chain):
    with pytest.raises(ConfigError, match="stray"):
        _cli(chain, "--epoch_size", "3", "stray")


def test_flags_do_not_modify_other_keys(chain):
    cfg = _cli(chain, "--a.d.e", "1")
    assert cfg.to_dict()["a"] == {"b": 2, "c": "changed", "d": {"e": 1, "f": "six"}}
    assert load_yaml(chain["grand"])["a"]["d"]["e"] == 7


def test_missing_attribute_names_dotted_key(chain):
    cfg = _cli(chain)
    with pytest.raises(AttributeError, match=r"a\.d\.nope"):
        _ = cfg.a.d.nope
    assert cfg.get("nope", 42) == 42 and "lr" in cfg and "nope" not in cfg


# ----------------------------------------------------------------------------- paths

def test_path_relative_to_config_dir_when_cwd_is_elsewhere(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    _write(conf_dir / "data" / "ann.json", "{}")
    cfg_file = _write(conf_dir / "c.yaml", "ann: data/ann.json\nsection:\n  img: data\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = parse_cli(["--config_path", cfg_file])
    assert cfg.path("ann") == os.path.join(str(conf_dir), "data", "ann.json")
    assert cfg.section.path("img") == os.path.join(str(conf_dir), "data")


def test_path_relative_to_cwd(tmp_path, monkeypatch):
    cfg_file = _write(tmp_path / "conf" / "c.yaml", "ann: in_cwd.json\n")
    work = tmp_path / "work"
    _write(work / "in_cwd.json", "{}")
    monkeypatch.chdir(work)
    cfg = parse_cli(["--config_path", cfg_file])
    assert cfg.path("ann") == os.path.join(str(work), "in_cwd.json")


def test_path_set_in_base_resolves_against_base_dir(tmp_path, monkeypatch):
    _write(tmp_path / "base_dir" / "files" / "w.ckpt", "x")
    _write(tmp_path / "base_dir" / "base.yaml", "weights: files/w.ckpt\nother: 1\n")
    child = _write(tmp_path / "child_dir" / "child.yaml", "base: [../base_dir/base.yaml]\nother: 2\n")
    grand = _write(tmp_path / "grand_dir" / "grand.yaml", "base: [../child_dir/child.yaml]\n")
    monkeypatch.chdir(tmp_path)
    for path in (child, grand):
        cfg = parse_cli(["--config_path", path])
        assert cfg.path("weights") == os.path.join(str(tmp_path), "base_dir", "files", "w.ckpt")
        assert cfg.origin_dir("weights") == os.path.join(str(tmp_path), "base_dir")
        assert cfg.origin_dir("other") == os.path.join(str(tmp_path), "child_dir")


def test_nested_path_overridden_in_child_resolves_against_child_dir(tmp_path, monkeypatch):
    _write(tmp_path / "b" / "x.txt", "b")
    _write(tmp_path / "c" / "y.txt", "c")
    _write(tmp_path / "b" / "base.yaml", "data:\n  first: x.txt\n  second: x.txt\n")
    child = _write(tmp_path / "c" / "child.yaml", "base: [../b/base.yaml]\ndata:\n  second: y.txt\n")
    monkeypatch.chdir(tmp_path)
    cfg = parse_cli(["--config_path", child])
    assert cfg.data.path("first") == os.path.join(str(tmp_path), "b", "x.txt")
    assert cfg.data.path("second") == os.path.join(str(tmp_path), "c", "y.txt")


def test_missing_path_names_key_and_value(tmp_path, monkeypatch):
    cfg_file = _write(tmp_path / "c.yaml", "ann: does/not/exist.json\nsection:\n  inner: gone.txt\n")
    monkeypatch.chdir(tmp_path)
    cfg = parse_cli(["--config_path", cfg_file])
    with pytest.raises(FileNotFoundError) as e:
        cfg.path("ann")
    assert "ann" in str(e.value) and "does/not/exist.json" in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"section\.inner.*gone\.txt"):
        cfg.section.path("inner")
    # must_exist=False gives the cwd-relative candidate instead of raising
    assert cfg.path("ann", must_exist=False) == os.path.join(str(tmp_path), "does", "not", "exist.json")


def test_empty_path_is_an_error(tmp_path):
    cfg = parse_cli(["--config_path", _write(tmp_path / "c.yaml", "ann: ''\n")])
    with pytest.raises(ConfigError, match="ann"):
        cfg.path("ann")


def test_flag_set_path_resolves_relative_to_cwd(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    # The same relative name exists beside the config and in the cwd; with a flag only the cwd counts.
    _write(conf_dir / "only_conf.txt", "conf")
    cfg_file = _write(conf_dir / "c.yaml", "ann: ''\n")
    work = tmp_path / "work"
    _write(work / "sub" / "f.txt", "work")
    monkeypatch.chdir(work)
    cfg = parse_cli(["--config_path", cfg_file, "--ann", "sub/f.txt"])
    assert cfg.path("ann") == os.path.join(str(work), "sub", "f.txt")
    assert cfg.origin_dir("ann") == str(work)
    cfg = parse_cli(["--config_path", cfg_file, "--ann", "only_conf.txt"])
    with pytest.raises(FileNotFoundError, match="ann"):
        cfg.path("ann")


def test_absolute_path(tmp_path):
    target = _write(tmp_path / "abs.txt", "x")
    cfg = parse_cli(["--config_path", _write(tmp_path / "c.yaml", "ann: ''\n"), "--ann", target])
    assert cfg.path("ann") == target


# ----------------------------------------------------------------------------- declared keys

@pytest.mark.parametrize("text, line, suggestion", [
    ("lr_shedule: multistep\n", 2, "lr_schedule"),
    ("epoch_size: 3\nepoch_sise: 50\n", 3, "epoch_size"),
])
def test_misspelt_key_in_a_config_file_names_file_line_and_closest_key(tmp_path, monkeypatch, text, line,
                                                                          suggestion):
    """A user's copy of a repo config with a typo fails before anything is built."""
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path / "mine.yaml", f"base: [{os.path.join(ROOT, 'configs', 'ssd', 'ssd300.yaml')}]\n{text}")
    with pytest.raises(ConfigError) as e:
        parse_cli(["--config_path", path])
    message = str(e.value)
    assert message.startswith(f"mine.yaml:{line}: unknown config key")
    assert f"did you mean '{suggestion}'?" in message


def test_unknown_nested_key_in_a_file(chain, tmp_path):
    path = _write(tmp_path / "nested.yaml", "base: [base.yaml]\na:\n  d:\n    ee: 1\n")
    with pytest.raises(ConfigError, match=r"nested\.yaml:4: unknown config key 'a\.d\.ee' \(did you mean 'a\.d\.e'"):
        parse_cli(["--config_path", path])


@pytest.mark.parametrize("text, key, expected", [("epoch_size: ten\n", "epoch_size", "an integer"),
                                                 ("lr: fast\n", "lr", "a number"),
                                                 ("run_eval: 1\n", "run_eval", "True or False"),
                                                 ("epoch_size: 2.5\n", "epoch_size", "an integer"),
                                                 ("a: 3\n", "a", "a mapping")])
def test_value_of_the_wrong_type_in_a_file(chain, tmp_path, text, key, expected):
    path = _write(tmp_path / "typed.yaml", "base: [base.yaml]\n" + text)
    with pytest.raises(ConfigError) as e:
        parse_cli(["--config_path", path])
    assert f"typed.yaml:2: config key '{key}' expects {expected}" in str(e.value)
    assert "base.yaml" in str(e.value)  # where the key is declared


def test_declared_types_accept_compatible_values(chain, tmp_path):
    path = _write(tmp_path / "ok.yaml", "base: [base.yaml]\nlr: 1\nepoch_size: 4.0\nmilestones: []\n")
    cfg = parse_cli(["--config_path", path])
    assert cfg.lr == 1 and cfg.epoch_size == 4.0


def test_base_files_declare_keys_and_other_files_only_set_them(tmp_path):
    """A file in a `_base_` folder may add keys even when it has bases of its own."""
    _write(tmp_path / "_base_" / "root.yaml", "x: 1\n")
    _write(tmp_path / "_base_" / "model.yaml", "base: [root.yaml]\ny: 2\n")
    leaf = _write(tmp_path / "leaf.yaml", "base: [_base_/model.yaml]\nx: 5\ny: 6\n")
    assert parse_cli(["--config_path", leaf]).to_dict() == {"x": 5, "y": 6, "config_path": leaf}
    bad = _write(tmp_path / "bad.yaml", "base: [_base_/model.yaml]\nz: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'z'"):
        parse_cli(["--config_path", bad])


REPO_CONFIGS = ["default_config.yaml"] + sorted(
    os.path.relpath(os.path.join(d, f), ROOT) for d, _, files in os.walk(os.path.join(ROOT, "configs"))
    for f in files if f.endswith(".yaml") and os.path.basename(d) != "_base_")


@pytest.mark.parametrize("rel", REPO_CONFIGS)
def test_every_repo_config_sets_only_declared_keys(rel):
    parse_cli(["--config_path", os.path.join(ROOT, rel)])


@pytest.mark.parametrize("overlay", ["device_ascend.yaml", "device_gpu.yaml"])
def test_device_overlays_declare_nothing_new(overlay):
    """The device files in _base_ only change runtime keys: a typo there would declare a key."""
    from src.model_utils.config import load_yaml
    runtime = load_yaml(os.path.join(ROOT, "configs", "_base_", "runtime.yaml"))
    assert set(load_yaml(os.path.join(ROOT, "configs", "_base_", overlay))) <= set(runtime)


# ----------------------------------------------------------------------------- real configs

@pytest.mark.parametrize("rel", ["default_config.yaml", "configs/ssd/ssd300.yaml", "configs/ssd/ssd300_shapes.yaml"])
def test_repo_configs_load(rel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)           # loading must not depend on the working directory
    cfg = parse_cli(["--config_path", os.path.join(ROOT, rel)])
    assert cfg.model == "ssd300_mobilenet_v2"
    assert cfg.aspect_ratios == [[], [2, 3], [2, 3], [2, 3], [2, 3], [2, 3]]
    assert cfg.lr_schedule in ("cosine", "multistep")
    assert isinstance(cfg.lr, float) and isinstance(cfg.weight_decay, float)
    # runtime.yaml (a base of ssd300.yaml) keys are present in every one
    assert "device_target" in cfg and "shapes_dir" in cfg


def test_default_config_is_used_without_config_path():
    cfg = parse_cli([])
    assert cfg.config_path == os.path.join(ROOT, "default_config.yaml")
    assert cfg.model == "ssd300_mobilenet_v2"
    assert cfg.dataset == "shapes"
