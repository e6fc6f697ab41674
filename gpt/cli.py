"""What the example scripts share: a library error becomes one clear line and exit status 1,
not a traceback; Ctrl-C outside training exits with 130."""
import subprocess
import sys

USER_ERRORS = (ValueError, TypeError, IndexError, OSError, RuntimeError, subprocess.CalledProcessError)


def run(main):
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
