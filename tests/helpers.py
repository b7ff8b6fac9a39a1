"""Assertions shared by the CLI tests."""

from __future__ import annotations


def assert_user_error(result, exit_code: int, *fragments: str) -> str:
    """One "error:" line on stderr, the exit code, no traceback, nothing on stdout."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # left through the funnel, not a crash
    assert "Traceback" not in result.output
    assert result.stdout == ""
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    for fragment in fragments:
        assert fragment in line, line
    return line


TINY_MODEL = {"d_model": 16, "num_blocks": 1, "num_heads": 2, "context_length": 16,
              "dropout": 0.0}


def train_tiny(out, corpus, cache, **train) -> list:
    """A real run small enough for a test (1 block, d_model 16, context 16, on the CPU); `train`
    sets TrainConfig fields. Returns the run's events."""
    from tinygpt_cli.config import TrainConfig
    from tinygpt_cli.train import Trainer, TrainRequest

    config = TrainConfig(**{"device": "cpu", "dtype": "float32", **train})
    trainer = Trainer(TrainRequest(train_config=config, model_options=TINY_MODEL, data=corpus,
                                   cache_dir=cache, out=out))
    try:
        return list(trainer.run())
    finally:
        trainer.close()
