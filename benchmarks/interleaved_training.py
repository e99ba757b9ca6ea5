"""Train several `transformers.Trainer` objects in one process, one optimizer step each in turn.

On a machine shared with other jobs, the load changes from one minute to the next. Timing
configurations one after the other then mixes their cost with the load of their minute.
`train_interleaved` runs every trainer's `train()` in its own thread. A `Turnstile` lets exactly
one thread run at a time and passes the turn on after every optimizer step, so step s of every
configuration runs within a few seconds of step s of the others. Because the other threads wait,
each step's wall-clock and CPU time belong to the configuration that ran it.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

from transformers import Trainer, TrainerCallback


class Turnstile:
    """Let named threads run one at a time, in a fixed rotation."""

    def __init__(self, names: Sequence[str]):
        self.rotation = list(names)
        self.current = 0
        self.condition = threading.Condition()

    def wait_turn(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: not self.rotation or self.rotation[self.current] == name)

    def pass_turn(self, name: str) -> None:
        with self.condition:
            if self.rotation and self.rotation[self.current] == name:
                self.current = (self.current + 1) % len(self.rotation)
            self.condition.notify_all()

    def leave(self, name: str) -> None:
        """Remove `name` from the rotation (its training ended or failed); the next one runs."""
        with self.condition:
            if name in self.rotation:
                index = self.rotation.index(name)
                self.rotation.remove(name)
                if index < self.current or self.current >= len(self.rotation):
                    self.current = self.current - 1 if index < self.current else 0
            self.condition.notify_all()


class StepClock(TrainerCallback):
    """Record the wall-clock and CPU seconds of every optimizer step, and take turns.

    A step is timed from the moment its thread gets the turn to the end of the step, after the
    callbacks added before this one (LDROTrainer's weight update). `synchronize` runs before each
    reading, for example `torch.cuda.synchronize`.
    """

    def __init__(self, name: str, turnstile: Turnstile, synchronize: Callable[[], None]):
        self.name = name
        self.turnstile = turnstile
        self.synchronize = synchronize
        self.step_seconds: list[float] = []
        self.step_cpu_seconds: list[float] = []
        self._started_at: tuple[float, float] | None = None

    def _start(self) -> None:
        self.turnstile.wait_turn(self.name)
        self.synchronize()
        self._started_at = (time.perf_counter(), time.process_time())

    def on_train_begin(self, args, state, control, **kwargs):
        self._start()

    def on_step_end(self, args, state, control, **kwargs):
        self.synchronize()
        self.step_seconds.append(time.perf_counter() - self._started_at[0])
        self.step_cpu_seconds.append(time.process_time() - self._started_at[1])
        self.turnstile.pass_turn(self.name)
        self._start()

    def on_train_end(self, args, state, control, **kwargs):
        self.turnstile.leave(self.name)


def train_interleaved(
    trainers: dict[str, Trainer], synchronize: Callable[[], None] = lambda: None
) -> dict[str, StepClock]:
    """Train every trainer, one optimizer step each in turn (dict order); return their clocks.

    Raises the first exception raised by any trainer, after every thread has stopped.
    """
    turnstile = Turnstile(list(trainers))
    clocks = {name: StepClock(name, turnstile, synchronize) for name in trainers}
    errors: list[BaseException] = []

    def train(name: str, trainer: Trainer) -> None:
        try:
            trainer.add_callback(clocks[name])
            # The set-up inside train() (optimizer, data loader, accelerate) also runs in turn.
            turnstile.wait_turn(name)
            trainer.train()
        except BaseException as error:  # re-raised in the calling thread below
            errors.append(error)
        finally:
            turnstile.leave(name)

    threads = [threading.Thread(target=train, args=item, name=f"train-{item[0]}") for item in trainers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return clocks
