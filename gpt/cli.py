"""What the example scripts share: every mistake gets one clear line, not a traceback or a usage dump.

    p = ArgumentParser(description=__doc__)   # argparse, with one-line errors and "did you mean"
                                               # (tensorlite._cli's, shared with tensorlite's own tools)
    ...
    if __name__ == "__main__":
        run(main)                              # library errors: `error: ...` and exit status 1

Exit statuses: 0 done, 1 an error, 2 a command-line mistake, 130 Ctrl-C, 143 SIGTERM (a
script returns 128 + the signal's number when a signal stopped it).
"""
import subprocess
import sys

from tensorlite._cli import ArgumentParser, suggest  # noqa: F401 (gpt.cli.ArgumentParser, as the scripts use it)

USER_ERRORS = (ValueError, TypeError, IndexError, OSError, RuntimeError, MemoryError,
               subprocess.CalledProcessError)


def run(main):
    """sys.exit(main()), with a library error as one line and status 1, Ctrl-C as status 130
    (its line: the KeyboardInterrupt's message, when it has one, such as how to continue)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
