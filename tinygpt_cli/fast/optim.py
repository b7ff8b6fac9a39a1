"""AdamW: torch.optim.AdamW's update, without torch.optim.Optimizer's machinery.

The update itself is PyTorch's: `torch.optim.adamw.adamw`, its documented functional form, and
`torch._fused_adamw_`, the fused kernel torch.optim.AdamW(fused=True) calls. What this class leaves
out is the `Optimizer` base class, which imports `torch._dynamo` on first use (seconds and tens of
MB on a small CPU, a noticeable share of the book's whole run) and wraps every step and
`zero_grad` in hooks and graph breaks for `torch.compile`'s sake.

The fused kernel is a private op: `make_optimizer` checks it on a tiny tensor first and falls back
to torch.optim.AdamW, with a notice, where a torch release has removed it or changed its signature.
The state dict is torch.optim.AdamW's, key for key, so a checkpoint's optimizer state loads into
either, and `param_groups`/`state` have the same shape, so `GradScaler` and `clip_grad_norm_` work.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

try:
    from torch.optim.adamw import adamw
except ImportError:  # a torch without the functional form: make_optimizer falls back
    adamw = None

# where tinygpt uses torch's fused AdamW kernel, as it did with torch.optim.AdamW (torch has one
# for mps and xpu too; those keep torch's default path)
FUSED_DEVICES = ("cuda", "cpu")


class AdamW:
    """One parameter group and AdamW with decoupled weight decay, as `torch.optim.AdamW` has."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, fused: bool | None = None) -> None:
        params = list(params)  # frozen ones too: torch numbers every parameter in its state dict
        if not params:
            raise ValueError("AdamW got no parameters")
        if fused is None:
            fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
        # the keys of torch.optim.AdamW's group, so its state dict and ours are interchangeable
        self.param_groups = [{
            "params": params, "lr": lr, "betas": betas, "eps": eps,
            "weight_decay": weight_decay, "amsgrad": False, "maximize": False, "foreach": None,
            "capturable": False, "differentiable": False, "fused": fused,
            "decoupled_weight_decay": True,
        }]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self._steps: torch.Tensor | None = None  # every state's step count (see _pack_steps)

    @property
    def params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    def _state_of(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state.get(p)
        if state is None:
            # the fused kernel reads the step count on the parameter's device; otherwise it
            # stays on the CPU, as torch.optim keeps it
            fused = self.param_groups[0]["fused"]
            state = self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32,
                                    device=p.device if fused else "cpu"),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
            self._steps = None
        return state

    def _pack_steps(self) -> torch.Tensor | None:
        """The step counts of every state as views of one tensor, so that when every parameter
        steps (as in tinygpt's training) one `add_` counts them all: torch's fused path adds 1 to
        each 0-d count separately, one small operation per tensor. None if the counts are on
        several devices."""
        steps = [s["step"] for s in self.state.values()]
        if len({t.device for t in steps}) != 1:
            return None
        packed = torch.stack(steps)
        for state, view in zip(self.state.values(), packed.unbind(), strict=True):
            state["step"] = view
        return packed

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        states = [self._state_of(p) for p in params]
        grads = [p.grad for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        beta1, beta2 = group["betas"]
        one_kind = len({(p.device, p.dtype) for p in params}) == 1
        if not (group["fused"] and one_kind and not isinstance(group["lr"], torch.Tensor)):
            # torch's functional path groups the tensors by device and dtype (the fused kernel
            # takes one of each) and moves a tensor learning rate to each device
            adamw(params, grads, exp_avgs, exp_avg_sqs, [], [s["step"] for s in states],
                  foreach=None if group["fused"] else group["foreach"], fused=group["fused"],
                  amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                  weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
            return
        # what torch.optim.adamw's fused path does for one device and dtype, with the step counts
        # added to at once
        if self._steps is None:
            self._steps = self._pack_steps()
        if self._steps is not None and len(params) == len(self.state):
            self._steps.add_(1)
        else:
            torch._foreach_add_([s["step"] for s in states], 1)
        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [],
                            [s["step"] for s in states], lr=float(group["lr"]), beta1=beta1,
                            beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                            amsgrad=False, maximize=False)

    def state_dict(self) -> dict:
        """torch.optim.AdamW's layout: parameters by index, the group's settings, the moments."""
        index = {p: i for i, p in enumerate(self.params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {index[p]: dict(s) for p, s in self.state.items()},
                "param_groups": [{**group, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict of ours or of torch.optim.AdamW/Adam; ValueError if it does not fit."""
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            sizes = [len(g["params"]) for g in groups]
            raise ValueError(f"it has parameter groups of {sizes} tensors, this model needs "
                             f"one group of {len(self.params)}")
        saved = groups[0]
        position = {index: i for i, index in enumerate(saved["params"])}
        fused = self.param_groups[0]["fused"]
        loaded: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for index, values in state_dict["state"].items():
            if index not in position:
                raise ValueError(f"its state names parameter {index}, which no group lists")
            p = self.params[position[index]]
            for key in ("exp_avg", "exp_avg_sq"):
                if tuple(values[key].shape) != tuple(p.shape):
                    raise ValueError(f"{key} of parameter {index} has shape "
                                     f"{tuple(values[key].shape)}, the parameter "
                                     f"{tuple(p.shape)}")
            step = torch.as_tensor(values["step"], dtype=torch.float32)
            loaded[p] = {
                "step": step.to(p.device if fused else "cpu").clone(),
                "exp_avg": values["exp_avg"].to(device=p.device, dtype=p.dtype).clone(),
                "exp_avg_sq": values["exp_avg_sq"].to(device=p.device, dtype=p.dtype).clone(),
            }
        for key in ("lr", "betas", "eps", "weight_decay"):
            if key in saved:
                self.param_groups[0][key] = tuple(saved[key]) if key == "betas" else saved[key]
        self.state = loaded
        self._steps = None


def fused_kernel_works() -> bool:
    """Whether this torch has the fused AdamW op with the signature `AdamW.step` calls, tried
    on a one-element tensor (a missing op, a renamed argument or a changed arity all fail)."""
    if adamw is None or not hasattr(torch, "_fused_adamw_"):
        return False
    p, g = torch.ones(1), torch.full((1,), 0.5)
    try:
        with torch.no_grad():
            torch._fused_adamw_([p], [g], [torch.zeros(1)], [torch.zeros(1)], [],
                                [torch.ones(())], lr=0.1, beta1=0.9, beta2=0.999,
                                weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
    except (TypeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.isfinite(p).all()) and float(p) < 1.0  # it stepped against the gradient


def make_optimizer(params: Iterable[torch.Tensor], lr: float, weight_decay: float
                   ) -> tuple[AdamW | torch.optim.AdamW, str | None]:
    """This module's AdamW, or torch.optim.AdamW where this torch lacks the fused op it calls;
    the second value is the notice to show then (None otherwise)."""
    if fused_kernel_works():
        return AdamW(params, lr=lr, weight_decay=weight_decay), None
    notice = (f"this torch ({torch.__version__}) lacks the fused AdamW op the speed path calls; "
              "using torch.optim.AdamW (the same update, a little slower)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), notice
