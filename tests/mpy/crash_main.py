# The firmware's entry with a fault injected: every boot, the 40th protection
# pass raises (a bug in the firmware, say). bms.start's guard must make the
# pack safe, log it and reset; the resets then count towards the lockout.
from bms import protection as PR

_evaluate = PR.Protection.evaluate
_passes = [0]


def _faulty(self, now, first=False):
    _passes[0] += 1
    if _passes[0] == 40:
        raise ValueError("injected fault")
    return _evaluate(self, now, first)


PR.Protection.evaluate = _faulty

from bms.boards.sim import Board  # noqa: E402
from bms.start import start  # noqa: E402

start(Board())
