"""What the example scripts share: every mistake gets one clear line, not a traceback or a usage dump.

    p = ArgumentParser(description=__doc__)   # argparse, with one-line errors and "did you mean"
    ...
    if __name__ == "__main__":
        run(main)                              # library errors: `error: ...` and exit status 1

Exit statuses: 0 done, 1 an error, 2 a command-line mistake, 130 Ctrl-C, 143 SIGTERM (a
script returns 128 + the signal's number when a signal stopped it).
"""
import argparse
import difflib
import subprocess
import sys

USER_ERRORS = (ValueError, TypeError, IndexError, OSError, RuntimeError, MemoryError,
               subprocess.CalledProcessError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors are one line on stderr, `error: ...`, exit status 2.

    A flag it does not know gets the closest one it does ("did you mean --learning-rate?"),
    by difflib, instead of the full usage text; `--help` still prints everything.
    """

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown flag is one line that suggests the nearest known one."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unrecognized(extras))
        return namespace

    def unrecognized(self, extras):
        """The message for arguments no flag takes: each unknown flag with its nearest known one."""
        flags = [a for a in extras if a.startswith("-") and a != "-"]
        if not flags:
            return f"unrecognized argument(s): {' '.join(extras)}"
        known = [s for s in self._option_string_actions if s.startswith("--")]
        parts = []
        for flag in flags:
            name = flag.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            parts.append(f"{name} (did you mean {close[0]}?)" if close else name)
        return f"unrecognized argument{'s' if len(parts) > 1 else ''} {', '.join(parts)}"

    def error(self, message):
        self.exit(2, f"error: {message}; see --help\n")


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
