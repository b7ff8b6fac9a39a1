"""--preset auto: the shape a budget buys, from a fake probe (tokens/s per shape), and through
`tinygpt train` with the probe faked."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tinygpt_cli import autosize
from tinygpt_cli.autosize import LADDER, choose, dropout_for, predicted_loss
from tinygpt_cli.cli import app


def fake_probe(calls: list | None = None, rate: float = 20_000.0):
    """A machine whose output layer costs as much as a body of 2M parameters: a larger body
    is nearly free at first, then slows training in proportion."""
    def probe(config, batch):
        if calls is not None:
            calls.append(config.d_model)
        body = 12 * config.num_blocks * config.d_model ** 2
        return rate * 2e6 / (2e6 + body)
    return probe


def plan(train_tokens: int, seconds: float, **kwargs):
    args = {"vocab_size": 10_000, "device_type": "cpu", "probe": fake_probe(),
            "max_context": 1024, **kwargs}
    return choose(train_tokens=train_tokens, seconds=seconds, **args)


def test_more_time_and_text_buy_a_larger_model():
    small = plan(50_000, 60).options
    large = plan(50_000_000, 3600).options
    assert large["d_model"] > small["d_model"]
    assert large["num_blocks"] >= small["num_blocks"]


def test_dropout_follows_the_epochs_the_budget_repeats():
    few = plan(50_000_000, 60)
    many = plan(20_000, 600)
    assert few.candidates and max(c.epochs for c in few.candidates) <= 1
    assert few.options["dropout"] == 0.0
    assert many.options["dropout"] == 0.1
    assert [dropout_for(e) for e in (0.5, 3.0, 4.0, 20.0)] == [0.0, 0.0, 0.1, 0.1]


def test_the_ladder_is_climbed_until_a_shape_predicts_worse():
    calls: list = []
    result = plan(200_000, 143, probe=fake_probe(calls))
    losses = [c.loss for c in result.candidates]
    best = losses.index(min(losses))
    assert len(calls) == best + 2 < len(LADDER)  # one shape past the best, then no more
    assert result.options["d_model"] == LADDER[best][0]


def test_a_shape_that_does_not_fit_memory_ends_the_climb():
    result = plan(50_000_000, 3600, fits=lambda config, batch: config.d_model < 128)
    assert result.options["d_model"] < 128
    assert all(c.config.d_model < 128 for c in result.candidates)


def test_the_context_never_exceeds_what_the_data_fills():
    result = plan(50_000_000, 3600, max_context=100)
    assert result.options["context_length"] == 100
    assert result.options["batch_size"] * 100 <= autosize.STEP_TOKENS["cpu"]


def test_the_schedule_spans_the_budget_and_the_choice_is_explained():
    result = plan(300_000, 143)
    o = result.options
    assert (o["max_time"], o["lr_schedule"]) == (143, "cosine")
    assert o["min_lr"] == pytest.approx(o["learning_rate"] / 10)
    assert o["max_iters"] > 143 * 1000 / (o["batch_size"] * o["context_length"])  # never binds
    assert any("epochs" in line for line in result.reasons)
    assert any(f"d_model {o['d_model']}" in line for line in result.reasons)


def test_repeated_text_is_worth_less_than_new_text():
    assert predicted_loss(10**6, 4e6, 10**6) > predicted_loss(10**6, 4e6, 10**7)
    assert predicted_loss(10**6, 1e6, 10**6) == predicted_loss(10**6, 1e6, 10**7)


# --- through the command line --------------------------------------------------------------------

@pytest.fixture
def quick_probe(monkeypatch):
    monkeypatch.setattr(autosize, "probe_throughput",
                        lambda config, batch, device, use_fast: fake_probe()(config, batch))


def test_train_preset_auto_prints_its_choice_and_the_users_options_win(corpus, tmp_path,
                                                                       quick_probe):
    out = tmp_path / "run" / "model.ckpt"
    result = CliRunner().invoke(app, ["train", "--data", str(corpus), "--preset", "auto",
                                      "--max-time", "3s", "--batch-size", "3", "--eval-iters",
                                      "2", "--threads", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert "--preset auto: model: d_model" in result.stderr
    assert "yours instead of its choice: --batch-size 3" in result.stderr
    from tinygpt_cli import checkpoint as ckpt

    state = ckpt.load(out)
    assert state["train_config"]["batch_size"] == 3  # the command line wins
    assert state["train_config"]["max_time"] == 3.0
    assert state["train_config"]["lr_schedule"] == "cosine"
    assert state["model_config"]["d_model"] in {shape[0] for shape in LADDER}


def test_preset_auto_without_a_budget_sizes_for_the_default(corpus, tmp_path, quick_probe,
                                                            monkeypatch):
    monkeypatch.setattr(autosize, "DEFAULT_SECONDS", 2.0)
    out = tmp_path / "model.ckpt"
    result = CliRunner().invoke(app, ["train", "--data", str(corpus), "--preset", "auto",
                                      "--eval-iters", "2", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "no --max-time: sized for" in result.stderr
    assert "Stopped at --max-time" in result.stderr


def test_preset_auto_under_torchrun_is_refused(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(app, ["train", "--data", str(corpus), "--preset", "auto",
                                      "--out", str(tmp_path / "model.ckpt")])
    assert result.exit_code == 2
    assert "error: --preset auto sizes a run for one process" in result.stderr
    assert not (tmp_path / "model.ckpt").exists()


def test_preset_auto_with_resume_keeps_the_runs_settings(corpus, tmp_path, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("a resumed run must not be sized again")

    monkeypatch.setattr(autosize, "probe_throughput", no_probe)
    out = tmp_path / "model.ckpt"
    common = ["train", "--data", str(corpus), "--d-model", "16", "--num-blocks", "1",
              "--num-heads", "2", "--context-length", "16", "--eval-iters", "2",
              "--threads", "1", "--out", str(out)]
    first = CliRunner().invoke(app, [*common, "--max-iters", "4"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, [*common, "--max-iters", "6", "--preset", "auto",
                                     "--resume", str(out)])
    assert again.exit_code == 0, again.output
    assert "--preset auto: a resumed run keeps its own settings" in again.stderr
    from tinygpt_cli import checkpoint as ckpt

    assert ckpt.load(out)["model_config"]["d_model"] == 16


def test_a_body_too_large_for_the_corpus_is_never_chosen():
    result = plan(2_000, 300, probe=fake_probe(rate=1e6))
    body = 12 * result.options["num_blocks"] * result.options["d_model"] ** 2
    assert body <= autosize.MAX_BODY_PER_TOKEN * 2_000 or len(result.candidates) == 1
    assert any("parameters per training token" in line for line in result.reasons)


def test_a_shape_whose_probe_runs_out_of_memory_ends_the_climb():
    def probe(config, batch):
        return None if config.d_model >= 80 else 10_000.0

    result = plan(50_000_000, 3600, probe=probe)
    assert result.options["d_model"] < 80
    assert any("would not fit in memory" in line for line in result.reasons)


def test_options_the_user_gives_recompute_what_follows_from_them():
    options = plan(300_000, 143).options
    given = {"learning_rate": 1e-4, "max_iters": 20, "context_length": 32}
    out = autosize.fitted(options, given)
    assert out["min_lr"] == pytest.approx(1e-5)  # never above the user's rate
    assert out["warmup_iters"] <= 1 and out["eval_interval"] <= 20 // autosize.EVALUATIONS + 1
    assert out["batch_size"] * 32 == options["batch_size"] * options["context_length"]
    assert autosize.fitted(options, {"min_lr": 0.0, "learning_rate": 1e-4})["min_lr"] == \
        options["min_lr"]  # a value the user gave is theirs (the merge puts it in)


def test_a_corpus_too_small_to_train_on_is_one_error(tmp_path, quick_probe):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\n")
    result = CliRunner().invoke(app, ["train", "--data", str(tiny), "--preset", "auto",
                                      "--out", str(tmp_path / "model.ckpt")])
    assert result.exit_code == 2, result.output
    assert "error: --preset auto: the corpus is too small to train on" in result.stderr
    assert "Traceback" not in result.output
