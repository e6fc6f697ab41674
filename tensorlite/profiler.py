"""tl.profile(): where the time of a step goes, per Function type.

    with tl.profile() as prof:
        loss = model(x, y)[1]; loss.backward()
    print(prof.table())

Timing is wall-clock around each forward and backward call. On the GPU, kernels run
asynchronously, so once cuda is in use the profiler synchronizes the device before and
after each call (start() and record()), so an op is charged for its own kernels and not
for work queued before it (this slows the step; use it to find hot spots, not to benchmark).
"""
import time
from collections import defaultdict

from . import backend
from . import tensor as _tensor


class profile:
    """Context manager that times the forward and backward of each op type inside its block:

        with tl.profile() as prof:
            ...
        print(prof)            # the table: calls and milliseconds per op, slowest first

    Blocks cannot be nested. `stats` holds {op: {"forward": [calls, s], "backward": [calls, s]}},
    `wall` the block's wall time in seconds."""

    def __init__(self):
        self.stats = defaultdict(lambda: {"forward": [0, 0.0], "backward": [0, 0.0]})
        self.wall = 0.0

    def __enter__(self):
        if _tensor._profiler is not None:
            raise RuntimeError("tl.profile() blocks cannot be nested")
        _tensor._profiler = self
        self._t0 = self.start()
        return self

    def __exit__(self, *exc):
        backend.synchronize()
        self.wall = time.perf_counter() - self._t0
        _tensor._profiler = None

    def start(self):
        """The time an op starts, once the device has finished everything queued before it."""
        backend.synchronize()
        return time.perf_counter()

    def record(self, name, phase, seconds, out=None):
        """Charge `seconds` (measured from start()) to op `name`'s phase ("forward" or
        "backward"), after waiting for the kernels the call queued on the device."""
        t0 = time.perf_counter()
        backend.synchronize()
        seconds += time.perf_counter() - t0
        entry = self.stats[name][phase]
        entry[0] += 1
        entry[1] += seconds

    def rows(self):
        """(op, fwd calls, fwd s, bwd calls, bwd s, total s), slowest first."""
        rows = [(name, s["forward"][0], s["forward"][1], s["backward"][0], s["backward"][1],
                 s["forward"][1] + s["backward"][1]) for name, s in self.stats.items()]
        return sorted(rows, key=lambda r: -r[5])

    def table(self):
        """The timings as a table: op, calls and milliseconds of forward and backward, total and
        share, slowest first; then the ops' total and the block's wall time."""
        rows = self.rows()
        total = sum(r[5] for r in rows) or 1e-12
        lines = [f"{'op':<14}{'fwd calls':>10}{'fwd ms':>10}{'bwd calls':>10}{'bwd ms':>10}"
                 f"{'total ms':>10}{'share':>8}"]
        for name, fc, ft, bc, bt, tt in rows:
            lines.append(f"{name:<14}{fc:>10}{ft * 1e3:>10.2f}{bc:>10}{bt * 1e3:>10.2f}"
                         f"{tt * 1e3:>10.2f}{tt / total:>8.1%}")
        lines.append(f"{'ops total':<14}{'':>40}{total * 1e3:>10.2f}")
        lines.append(f"{'wall (block)':<14}{'':>40}{self.wall * 1e3:>10.2f}")
        return "\n".join(lines)

    def __str__(self):
        return self.table()
