"""Stop training cleanly on Ctrl-C or SIGTERM (what schedulers send before killing, e.g. on preemption): the first
signal asks the loop to save a checkpoint after the current step and stop; a second one exits at once."""

from __future__ import annotations

import signal

_NAMES = {signal.SIGINT: "Interrupted", signal.SIGTERM: "Terminated (SIGTERM)"}
_AGAIN = {signal.SIGINT: "Ctrl-C again", signal.SIGTERM: "another SIGTERM"}


class StopOnSignal:
    """`with StopOnSignal() as stop:` ... `should_stop=stop`; the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        for signum in _NAMES:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{_NAMES[signum]}: saving a checkpoint after this step ({_AGAIN[signum]} to quit at once).",
              flush=True)

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
