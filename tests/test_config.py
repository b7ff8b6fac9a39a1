"""The one settings merge of a training run: its layers and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinygpt_cli.config import (
    PER_INVOCATION,
    TrainConfig,
    merge_settings,
    parse_duration,
    read_toml,
)
from tinygpt_cli.errors import ConfigError, UsageError

RESUMED = {
    "model_config": {"vocab_size": 99, "d_model": 32, "num_blocks": 2, "num_heads": 4,
                     "context_length": 16, "dropout": 0.2},
    "train_config": {"batch_size": 8, "learning_rate": 3e-4, "seed": 7, "device": "cuda",
                     "dtype": "bfloat16", "compile": True, "max_time": 60.0, "fast": False},
    "data": {"path": "/nowhere/corpus.txt",
             "settings": {"encoding": "cl100k_base", "vocab_mode": "full", "val_fraction": 0.2,
                          "column": None, "errors": "replace"}},
}


def test_nothing_given_is_the_books_run():
    settings = merge_settings()
    assert settings.model_options == {}
    assert settings.train_config == TrainConfig()
    assert settings.tokenize == {} and settings.data is None


def test_each_layer_overrides_the_one_before():
    """book defaults < resumed run < preset < TOML file < command line"""
    settings = merge_settings(
        resumed=RESUMED, preset_name="gpt2-small",
        file_values={"d_model": 48, "batch_size": 16, "learning_rate": 1e-4},
        command_line={"batch_size": 32, "dropout": None, "out": Path("x.ckpt")})
    options, train = settings.model_options, settings.train_config
    assert options["d_model"] == 48  # the file over the preset's 768
    assert options["num_blocks"] == 12 and options["context_length"] == 1024  # the preset
    assert options["dropout"] == 0.0  # the preset over the resumed 0.2; None is "not given"
    assert "vocab_size" not in options  # the data decides it
    assert train.batch_size == 32  # the command line over the file over the resumed 8
    assert train.learning_rate == 1e-4 and train.seed == 7  # file; resumed
    assert train.max_iters == TrainConfig().max_iters  # the book's default


def test_a_resumed_run_keeps_its_settings_but_not_its_machine():
    settings = merge_settings(resumed=RESUMED)
    train = settings.train_config
    assert (train.batch_size, train.learning_rate, train.seed) == (8, 3e-4, 7)
    assert settings.model_options["d_model"] == 32
    for key in PER_INVOCATION:  # device, dtype, compile, max_time, fast: this invocation's
        assert getattr(train, key) == getattr(TrainConfig(), key), key
    # the recorded corpus is gone: the data is not taken, its tokenizer settings are
    assert settings.data is None
    assert settings.tokenize["vocab_mode"] == "full" and settings.tokenize["errors"] == "replace"


def test_new_data_on_resume_takes_the_command_lines_tokenizer_settings_only(tmp_path):
    corpus = tmp_path / "other.txt"
    corpus.write_text("text")
    settings = merge_settings(resumed=RESUMED,
                              command_line={"data": corpus, "val_fraction": 0.05})
    assert settings.data == (corpus,)
    assert settings.tokenize == {"val_fraction": 0.05}


def test_a_resumed_runs_corpus_is_found_where_it_still_is(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("text")
    resumed = {**RESUMED, "data": {**RESUMED["data"], "path": str(corpus)}}
    assert merge_settings(resumed=resumed).data == (corpus,)


@pytest.mark.parametrize("given, seconds", [
    ("90", 90.0), ("0.5", 0.5), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0),
    ("1.5h", 5400.0), ("1h30m", 5400.0), ("2m 30s", 150.0), ("10M", 600.0), (45, 45.0),
    (2.5, 2.5)])
def test_max_time_takes_seconds_or_a_duration(given, seconds):
    assert parse_duration(given) == seconds


@pytest.mark.parametrize("given, says", [
    ("ten minutes", "must be a duration such as 90s, 10m or 1h"), ("5x", "must be a duration"),
    ("10m extra", "must be a duration"), ("inf", "must be a finite number"),
    ("nan", "must be a finite number"), (True, "must be a duration")])
def test_a_max_time_that_is_no_duration_is_refused(given, says):
    with pytest.raises(ConfigError, match=says):
        parse_duration(given)


def test_a_toml_max_time_may_be_a_duration(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('max_time = "2m"\n')
    assert read_toml(path) == {"max_time": 120.0}
    path.write_text('max_time = "soon"\n')
    with pytest.raises(UsageError, match=r"--config .*run.toml: max_time must be a duration"):
        read_toml(path)
