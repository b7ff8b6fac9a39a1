"""--threads: parsing and bounds, and auto's measuring (on a fake clock: each unit of work takes
what the current count and the machine's load say)."""

from __future__ import annotations

import pytest
import torch

from tinygpt_cli import runtime
from tinygpt_cli.errors import UsageError
from tinygpt_cli.runtime import PROBE_UNITS, RECHECK_SECONDS, Threads, parse_threads


@pytest.fixture
def eight_cores(monkeypatch):
    monkeypatch.setattr(runtime, "cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(runtime, "cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("text", ["auto", "AUTO", " auto "])
def test_auto_parses_to_none(text):
    assert parse_threads(text) is None


def test_counts_from_one_to_the_cores(eight_cores):
    assert [parse_threads(str(n)) for n in (1, 4, 8)] == [1, 4, 8]


@pytest.mark.parametrize("text", ["0", "-1", "9", str(10**9), "two", "1.5", ""])
def test_bad_counts_are_refused_with_the_range(eight_cores, text):
    with pytest.raises(UsageError, match="--threads must be auto"):
        parse_threads(text)


class Machine:
    """A fake clock and thread setting: a unit of work takes `times[count]` seconds."""

    def __init__(self, times: dict[int, float]) -> None:
        self.times, self.now, self.count = dict(times), 0.0, None
        self.applied: list[int] = []  # each change of the count
        self.units: list[int] = []  # the count each unit ran on

    def apply(self, count: int) -> None:
        self.count = count
        self.applied.append(count)

    def clock(self) -> float:
        return self.now

    def run(self, threads: Threads, units: int, first: float | None = None) -> None:
        for i in range(units):
            threads.start()
            self.units.append(self.count)
            self.now += first if (first is not None and i == 0) else self.times[self.count]
            threads.stop()


def auto(machine: Machine, device: str = "cpu", local_world_size: int = 1) -> Threads:
    return Threads.resolve(None, torch.device(device), local_world_size, apply=machine.apply,
                           clock=machine.clock)


def settled(times: dict[int, float]) -> tuple[Machine, Threads]:
    """auto on two cores, after its first measure (the unit it skips, then each count)."""
    machine = Machine(times)
    threads = auto(machine)
    machine.run(threads, 1 + 2 * PROBE_UNITS)
    return machine, threads


def test_auto_tries_powers_of_two_up_to_the_cores(eight_cores):
    assert auto(Machine({})).candidates == [1, 2, 4, 8]


def test_auto_stops_at_omp_num_threads(eight_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto(Machine({})).candidates == [1, 2, 3]


def test_under_torchrun_auto_is_each_process_share_fixed(eight_cores):
    machine = Machine({2: 1.0})
    threads = auto(machine, local_world_size=4)
    assert (threads.auto, threads.count, machine.applied) == (False, 2, [2])


def test_a_pinned_count_never_changes(eight_cores):
    machine = Machine({3: 0.5})
    threads = Threads.resolve(3, torch.device("cpu"), apply=machine.apply, clock=machine.clock)
    machine.run(threads, 50)
    assert machine.applied == [3] and threads.changes == []


def test_nothing_is_set_off_the_cpu(eight_cores):
    machine = Machine({})
    threads = auto(machine, device="meta")
    threads.start()
    threads.stop()
    assert machine.applied == [] and threads.count is None


def test_idle_machine_keeps_the_most_threads(two_cores):
    machine = Machine({1: 0.052, 2: 0.045})
    threads = auto(machine)
    # the first unit (allocation, cold caches) is slow and is not measured
    machine.run(threads, 1 + 2 * PROBE_UNITS + 1, first=5.0)
    assert threads.choice == 2 and machine.units[-1] == 2
    (old, new, medians), = threads.changes
    assert (old, new) == (None, 2) and medians == pytest.approx({1: 0.052, 2: 0.045})


def test_busy_machine_drops_to_fewer_threads(two_cores):
    machine, threads = settled({1: 0.06, 2: 0.15})
    assert threads.choice == 1
    machine.run(threads, 20)
    assert set(machine.units[-20:]) == {1}  # no measuring while the pace holds


def test_a_tie_goes_to_fewer_threads(eight_cores):
    machine = Machine({1: 0.100, 2: 0.099, 4: 0.0995, 8: 0.3})
    threads = auto(machine)
    machine.run(threads, 1 + 4 * PROBE_UNITS)
    assert threads.choice == 1


def test_load_arriving_mid_run_is_followed_at_once(two_cores):
    machine, threads = settled({1: 0.052, 2: 0.045})
    assert threads.choice == 2
    machine.times = {1: 0.06, 2: 0.15}  # another process starts spinning on a core
    machine.run(threads, PROBE_UNITS)  # slower by more than SLOWER: measure again
    machine.run(threads, 2 * PROBE_UNITS)
    assert threads.choice == 1
    assert threads.changes[-1][:2] == (2, 1)


def test_load_leaving_is_found_by_the_periodic_check(two_cores):
    machine, threads = settled({1: 0.06, 2: 0.15})
    assert threads.choice == 1
    machine.times = {1: 0.052, 2: 0.045}  # 1 thread is no slower: only the clock finds this
    units = int(RECHECK_SECONDS / 0.052) + 2 * PROBE_UNITS + 2
    machine.run(threads, units)
    assert threads.choice == 2


def test_rechecks_back_off_while_the_choice_holds(two_cores):
    machine, threads = settled({1: 0.06, 2: 0.15})
    machine.run(threads, 4000)  # 240 s of steady load
    on_two = machine.units[1 + 2 * PROBE_UNITS:].count(2)
    # measured again at about 10, 30, 70, 150 s (the interval doubles while 1 holds)
    assert on_two == 4 * PROBE_UNITS and threads.choice == 1


def test_discarded_units_are_not_measured(two_cores):
    """A step run beside a background save is slow for another reason than its threads."""
    machine, threads = settled({1: 0.052, 2: 0.045})
    assert threads.choice == 2
    machine.run(threads, 1)
    switches = len(machine.applied)
    for _ in range(10):  # ten slow steps beside a save: no measuring again, no change
        threads.start()
        machine.now += 0.5
        threads.stop(discard=True)
    machine.run(threads, 5)
    assert threads.choice == 2 and len(machine.applied) == switches
