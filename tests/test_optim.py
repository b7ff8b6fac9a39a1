from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tinygpt_cli.fast.optim import AdamW


def two_layers(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def train(model: nn.Module, optimizer, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 6, generator=gen)
        loss = model(x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("fused", [True, False])
def test_updates_match_torch_adamw_bit_for_bit(fused):
    ours, theirs = two_layers(), two_layers()
    train(ours, AdamW(ours.parameters(), lr=1e-2, weight_decay=0.1, fused=fused), 7)
    train(theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1,
                                    fused=fused), 7)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(ours.parameters()), next(two_layers().parameters()))  # it moved


def test_step_counts_follow_each_parameter_when_only_some_have_gradients():
    """The counts are packed into one tensor and added to at once while every parameter steps;
    a step where one has no gradient must still count only the others, as torch's does."""
    ours, theirs = two_layers(), two_layers()
    our_opt = AdamW(ours.parameters(), lr=1e-2, weight_decay=0.1)
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1, fused=True)
    gen = torch.Generator().manual_seed(3)
    for step in range(6):
        x = torch.randn(4, 6, generator=gen)
        for model, opt in ((ours, our_opt), (theirs, their_opt)):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            if step in (2, 3):
                model[0].bias.grad = None  # this parameter sits these steps out
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    counts = [s["step"].item() for s in our_opt.state_dict()["state"].values()]
    assert counts == [6.0, 4.0, 6.0, 6.0]
    assert counts == [s["step"].item() for s in their_opt.state_dict()["state"].values()]


def test_state_dicts_move_both_ways_between_ours_and_torchs():
    """Checkpoints written before tinygpt had its own AdamW (torch.optim's) still resume."""
    reference = two_layers()
    ref_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, fused=True)
    train(reference, ref_opt, 3)

    ours = two_layers()
    ours.load_state_dict(reference.state_dict())
    our_opt = AdamW(ours.parameters(), lr=1e-2)
    our_opt.load_state_dict(ref_opt.state_dict())
    theirs = two_layers()
    theirs.load_state_dict(reference.state_dict())
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-2, fused=True)
    their_opt.load_state_dict(ref_opt.state_dict())
    train(ours, our_opt, 4, seed=2)
    train(theirs, their_opt, 4, seed=2)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)

    back = torch.optim.AdamW(two_layers().parameters(), lr=1e-2, fused=True)
    back.load_state_dict(our_opt.state_dict())  # and ours into torch's
    assert back.state_dict()["state"][0]["step"].item() == 7
    assert torch.equal(back.state_dict()["state"][3]["exp_avg"],
                       our_opt.state_dict()["state"][3]["exp_avg"])


def test_a_state_dict_for_another_model_is_refused():
    opt = AdamW(two_layers().parameters())
    other = nn.Linear(6, 3)
    other_opt = AdamW(other.parameters())
    train(nn.Sequential(other, nn.ReLU()), other_opt, 1)
    with pytest.raises(ValueError, match="one group of 4"):
        opt.load_state_dict(other_opt.state_dict())

    wide = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 3))
    wide_opt = AdamW(wide.parameters())
    train(wide, wide_opt, 1)
    with pytest.raises(ValueError, match="has shape"):
        opt.load_state_dict(wide_opt.state_dict())
    assert opt.state == {}  # a refused load leaves the optimizer as it was


@pytest.mark.parametrize("fused", [True, False])
def test_a_step_without_any_gradient_changes_nothing(fused):
    model = two_layers()
    opt = AdamW(model.parameters(), lr=1e-2, fused=fused)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()  # as torch's does: nothing to update is not an error
    train(model, opt, 1)
    after_one = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad(set_to_none=True)
    opt.step()
    for a, b in zip(after_one, model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(before[0], after_one[0])
    assert [s["step"].item() for s in opt.state.values()] == [1.0] * 4


def test_mixed_dtypes_and_a_tensor_rate_take_torchs_grouping_path():
    """The direct call to the fused kernel takes one device and dtype; anything else goes through
    torch's functional AdamW, which groups them, and must still match torch."""
    def mixed():
        torch.manual_seed(0)
        return nn.ParameterList([nn.Parameter(torch.randn(3)),
                                 nn.Parameter(torch.randn(4, dtype=torch.float64))])

    ours, theirs = mixed(), mixed()
    our_opt = AdamW(ours.parameters(), lr=torch.tensor(1e-2))
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=torch.tensor(1e-2), fused=True)
    for _ in range(3):
        for params, opt in ((ours, our_opt), (theirs, their_opt)):
            opt.zero_grad(set_to_none=True)
            sum(p.square().sum() for p in params).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_weight_decay_and_rate_are_read_from_the_group_at_each_step():
    p = nn.Parameter(torch.ones(3))
    opt = AdamW([p], lr=0.5, weight_decay=0.0)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(p, torch.ones(3))  # no gradient, no decay: nothing moves
    opt.param_groups[0]["weight_decay"] = 0.1
    p.grad = torch.zeros(3)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((3,), 1 - 0.5 * 0.1))


def test_training_never_imports_torch_dynamo(corpus, cache_root, tmp_path):
    """torch.optim.Optimizer imports it on first use: about 1 s and 70 MB a run does not need."""
    code = ("import sys\n"
            "from tests.helpers import train_tiny\n"
            "events = train_tiny(*sys.argv[1:], max_iters=3, eval_interval=2)\n"
            "assert type(events[-1]).__name__ == 'RunDone' and events[-1].steps == 3\n"
            "print('torch._dynamo' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run" / "model.ckpt"),
                             str(corpus), str(cache_root)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_gradient_scaler_drives_it_as_it_drives_torchs():
    """The scaler's protocol (scale, unscale_, skip on inf, back off), as float16 training on a
    GPU uses it; run here in float32 on the CPU, where GradScaler behaves the same way."""
    def run(make_optimizer) -> tuple[nn.Module, list[float]]:
        model = two_layers()
        opt = make_optimizer(model.parameters())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        gen = torch.Generator().manual_seed(3)
        scales = []
        for step in range(6):
            x = torch.randn(4, 6, generator=gen)
            if step == 2:
                x[0, 0] = float("inf")  # an overflow: this update must be skipped
            opt.zero_grad(set_to_none=True)
            scaler.scale(model(x).square().mean()).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            scales.append(scaler.get_scale())
        return model, scales

    ours, our_scales = run(lambda p: AdamW(p, lr=1e-2))
    theirs, their_scales = run(lambda p: torch.optim.AdamW(p, lr=1e-2, fused=True))
    assert our_scales == their_scales and our_scales[2] < our_scales[1]  # backed off at the inf
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_frozen_parameters_keep_torchs_numbering():
    """torch numbers every parameter in its state dict, frozen ones too; so must we."""
    ours, theirs = two_layers(), two_layers()
    for model in (ours, theirs):
        model[0].weight.requires_grad_(False)
    our_opt = AdamW(ours.parameters(), lr=1e-2)
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-2, fused=True)
    train(ours, our_opt, 2)
    train(theirs, their_opt, 2)
    mine, torchs = our_opt.state_dict(), their_opt.state_dict()
    assert sorted(mine["state"]) == sorted(torchs["state"]) == [1, 2, 3]
    assert mine["param_groups"][0]["params"] == torchs["param_groups"][0]["params"]
    our_opt.load_state_dict(torchs)
    for i in (1, 2, 3):
        assert torch.equal(our_opt.state_dict()["state"][i]["exp_avg_sq"],
                           torchs["state"][i]["exp_avg_sq"])
