"""speechstack.config: every config file loads; strict keys; overrides; bases; round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from speechstack.config import Config, ConfigError, load_config, parse_override, save_config

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_there_are_config_files_to_check() -> None:
    assert CONFIG_FILES, "no configs/**/*.yaml found"


@pytest.mark.parametrize(
    "path", CONFIG_FILES, ids=[str(p.relative_to(REPO_ROOT)) for p in CONFIG_FILES]
)
def test_every_config_file_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, Config)
    # The registries' schemas filled in every param, so the saved config is complete.
    assert config.model.params and config.task.params


def test_defaults_load_without_a_file() -> None:
    config = load_config()
    assert config.model_dump() == load_config(None, []).model_dump()
    assert config.audio.clip_samples == 16_000


def test_defaults_yaml_writes_out_the_schema_defaults() -> None:
    """One source of every default: each value of configs/defaults.yaml is the schema's own
    (the file documents them); only the tuning search space is the file's alone."""
    written = yaml.safe_load((REPO_ROOT / "configs" / "defaults.yaml").read_text())
    schema = Config.model_construct().model_dump(mode="json")  # defaults, before resolving

    def differences(data: dict, defaults: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in data.items():
            if f"{prefix}{key}" == "tune.space":
                continue
            if isinstance(value, dict) and isinstance(defaults.get(key), dict):
                found += differences(value, defaults[key], f"{prefix}{key}.")
            elif defaults.get(key, "<not in the schema>") != value:
                found.append(f"{prefix}{key}: file {value!r}, schema {defaults.get(key)!r}")
        return found

    assert differences(written, schema) == []
    assert written["tune"]["space"]  # the defaults' search space is there
    # f_max null resolves to the Nyquist frequency, as runs saved with 8000.0 had it
    assert Config().features.f_max == 8000.0


# ---------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("data", "key", "a_valid_key"),
    [
        ({"experimentt": "x"}, "experimentt", "experiment"),
        ({"train": {"lrr": 0.1}}, "train.lrr", "warmup_fraction"),
        ({"augment": {"noise": {"pp": 0.5}}}, "augment.noise.pp", "min_snr_db"),
        (
            {"model": {"name": "cnn", "params": {"backbon": "x"}}},
            "model.params.backbon",
            "backbone",
        ),
    ],
    ids=["top-level", "nested", "deeply-nested", "model-params"],
)
def test_unknown_key_names_the_key_the_file_and_the_valid_keys(
    tmp_path: Path, data: dict, key: str, a_valid_key: str
) -> None:
    path = write_yaml(tmp_path / "typo.yaml", data)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"'{key}'" in message
    assert str(path) in message
    assert "valid keys" in message and a_valid_key in message


def test_unknown_key_in_an_override_is_rejected_and_names_the_override() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.lrr=0.1"])
    assert "'train.lrr'" in str(error.value) and "train.lrr=0.1" in str(error.value)
    assert "lr" in str(error.value).split("valid keys", 1)[1]


# ---------------------------------------------------------------- overrides


def test_parse_override_nests_dotted_keys_with_yaml_typing() -> None:
    assert parse_override("train.lr=0.1") == {"train": {"lr": 0.1}}
    assert parse_override("augment.noise.p=0") == {"augment": {"noise": {"p": 0}}}
    assert parse_override("train.amp=false") == {"train": {"amp": False}}
    assert parse_override("train.threads=null") == {"train": {"threads": None}}
    assert parse_override("stack.experiments=[cnn, ast]") == {
        "stack": {"experiments": ["cnn", "ast"]}
    }
    assert parse_override("experiment=a=b") == {"experiment": "a=b"}


def test_parse_override_reads_exponent_floats_as_in_its_docstring() -> None:
    """The docstring promises ``"train.lr=1e-3" -> {"train": {"lr": 0.001}}``; YAML 1.1
    (PyYAML) reads ``1e-3`` as a string unless the resolver is taught otherwise."""
    assert parse_override("train.lr=1e-3") == {"train": {"lr": 0.001}}


@pytest.mark.parametrize("text", ["train.lr", "=3", "  =3"])
def test_parse_override_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        parse_override(text)


def test_overrides_apply_over_the_file(repo_root: Path) -> None:
    path = repo_root / "configs" / "speech_commands" / "cnn.yaml"
    config = load_config(
        path,
        [
            "train.lr=0.1",
            "augment.noise.p=0",
            "train.lr=1e-3",
            "model.params.drop_rate=0.3",
            "folds.k=3",
        ],
    )
    assert config.train.lr == pytest.approx(0.001)  # the last override wins
    assert config.augment.noise.p == 0.0
    assert config.augment.noise.min_snr_db == load_config(path).augment.noise.min_snr_db
    assert config.model.params["drop_rate"] == pytest.approx(0.3)
    assert config.folds.k == 3


# ---------------------------------------------------------------- base chains


def test_base_chain_merges_recursively(tmp_path: Path) -> None:
    write_yaml(
        tmp_path / "shared" / "root.yaml",
        {"train": {"epochs": 3, "lr": 0.5, "batch_size": 8}, "folds": {"k": 4}},
    )
    write_yaml(
        tmp_path / "shared" / "middle.yaml",
        {"base": "root.yaml", "train": {"lr": 0.2}, "augment": {"reverb": {"p": 1.0}}},
    )
    path = write_yaml(
        tmp_path / "experiments" / "leaf.yaml",
        {
            "base": "../shared/middle.yaml",
            "experiment": "leaf",
            "train": {"batch_size": 16},
            "augment": {"reverb": {"max_rt60": 0.5}},
        },
    )
    config = load_config(path)
    assert config.experiment == "leaf"
    assert (config.train.epochs, config.train.lr, config.train.batch_size) == (3, 0.2, 16)
    assert config.folds.k == 4
    assert (config.augment.reverb.p, config.augment.reverb.max_rt60) == (1.0, 0.5)
    assert config.augment.reverb.min_rt60 == 0.15  # untouched default


def test_base_cycle_is_a_clear_error(tmp_path: Path) -> None:
    write_yaml(tmp_path / "a.yaml", {"base": "b.yaml"})
    write_yaml(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle") as error:
        load_config(tmp_path / "a.yaml")
    assert "a.yaml" in str(error.value) and "b.yaml" in str(error.value)


def test_missing_base_file_names_it(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "exp.yaml", {"base": "gone.yaml"})
    with pytest.raises(ConfigError, match=r"gone\.yaml"):
        load_config(path)


def test_a_list_of_bases_merges_in_order(tmp_path: Path) -> None:
    write_yaml(tmp_path / "task.yaml", {"train": {"epochs": 3, "lr": 0.5}, "folds": {"k": 4}})
    write_yaml(tmp_path / "family.yaml", {"experiment": "fam", "train": {"lr": 0.2}})
    path = write_yaml(
        tmp_path / "exp.yaml", {"base": ["task.yaml", "family.yaml"], "train": {"epochs": 5}}
    )
    config = load_config(path)
    assert config.experiment == "fam" and config.folds.k == 4
    assert (config.train.epochs, config.train.lr) == (5, 0.2)  # later files win
    bad = write_yaml(tmp_path / "bad.yaml", {"base": ["task.yaml", 3]})
    with pytest.raises(ConfigError, match="'base' must be a file name or a list"):
        load_config(bad)


def test_a_missing_task_family_file_is_the_task_base_with_the_family(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    write_yaml(configs / "task" / "base.yaml", {"train": {"epochs": 3}, "folds": {"k": 4}})
    write_yaml(configs / "models" / "fam.yaml", {"experiment": "fam", "train": {"lr": 0.2}})
    config = load_config(configs / "task" / "fam.yaml")  # no such file
    assert (config.experiment, config.train.epochs, config.train.lr) == ("fam", 3, 0.2)
    # a tuned file over it (what `make best-config` writes) resolves the same way
    child = write_yaml(
        configs / "task" / "fam-best.yaml", {"base": "fam.yaml", "train": {"epochs": 7}}
    )
    assert load_config(child).train.lr == 0.2
    with pytest.raises(ConfigError, match=r"other\.yaml.*may be left out only where"):
        load_config(configs / "task" / "other.yaml")


def test_no_two_shipped_config_files_are_byte_identical() -> None:
    """A setting shared by tasks lives in one file (configs/models/, defaults.yaml, a
    task's base.yaml) and is composed, not copied."""
    seen: dict[bytes, Path] = {}
    for path in CONFIG_FILES:
        other = seen.setdefault(path.read_bytes(), path)
        assert other == path, f"{path} is a copy of {other}"


def test_every_task_runs_every_shared_family() -> None:
    """configs/<task>/<family>.yaml resolves for each task and family of configs/models/,
    written out or composed, to the task's reader and the family's model."""
    families = sorted(p.stem for p in (REPO_ROOT / "configs" / "models").glob("*.yaml"))
    tasks = sorted(p.parent.name for p in (REPO_ROOT / "configs").glob("*/base.yaml"))
    assert {"cnn", "gru"} <= set(families) and "ravdess" in tasks
    for task in tasks:
        for family in families:
            config = load_config(REPO_ROOT / "configs" / task / f"{family}.yaml")
            base = load_config(REPO_ROOT / "configs" / task / "base.yaml")
            assert (config.experiment, config.model.name) == (family, family)
            assert config.task == base.task and config.audio == base.audio


def test_a_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


# ---------------------------------------------------------------- types and names


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=many", "train.epochs"),
        ("train.device=tpu", "train.device"),
        ("augment.noise.p=2", "augment.noise.p"),
        ("model.params.drop_rate=lots", "model.params.drop_rate"),
        ("task.params.label_mode=phonemes", "task.params.label_mode"),
    ],
)
def test_wrong_types_and_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert f"'{key}'" in str(error.value)


def test_unknown_model_name_lists_the_known_models() -> None:
    with pytest.raises((ConfigError, KeyError), match=r"unknown model 'nope'.*cnn"):
        load_config(None, ["model.name=nope"])


def test_unknown_task_name_lists_the_known_tasks() -> None:
    with pytest.raises((ConfigError, KeyError), match=r"unknown task 'nope'.*speech_commands"):
        load_config(None, ["task.name=nope"])


def test_run_identity_ignores_only_result_neutral_settings() -> None:
    """One identity for a run (Config.identity / digest): speed and output settings leave
    it alone, anything the run computes changes it."""
    path = REPO_ROOT / "configs" / "speech_commands" / "cnn.yaml"
    base = load_config(path)
    speed = ["train.threads=1", "audio.in_memory=false"]
    neutral = load_config(path, [*speed, "stack.name=other", "runs_dir=elsewhere"])
    changed = load_config(path, ["train.lr=0.0001"])
    assert neutral.identity() == base.identity() and neutral.digest() == base.digest()
    assert changed.digest() != base.digest()


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    "path", CONFIG_FILES, ids=[str(p.relative_to(REPO_ROOT)) for p in CONFIG_FILES]
)
def test_save_then_load_round_trips(tmp_path: Path, path: Path) -> None:
    config = load_config(path, ["train.threads=2", "folds.file=folds/custom.csv"])
    saved = tmp_path / "run" / "config.yaml"
    save_config(config, saved)
    again = load_config(saved)
    assert again.model_dump() == config.model_dump()
    assert again.digest() == config.digest()
    assert [p.name for p in saved.parent.iterdir()] == ["config.yaml"]  # no temp files
