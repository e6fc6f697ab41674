"""argparse with one-line errors and "did you mean", for every command-line tool here.

tensorlite's own (python -m tensorlite.gradcheck) and, through gpt.cli, the example scripts'.
"""
import argparse
import difflib


def suggest(flag, known):
    """The known flags that a mistyped or shortened `flag` most likely means (a list, maybe
    empty): those whose words' initials spell it (--lr: --learning-rate; --bs: --batch-size,
    --block-size), else those it begins (--dev: --device; at most 4), else difflib's closest
    (--lerning-rate: --learning-rate)."""
    bare = flag.lstrip("-")
    initials = [k for k in known if bare and "".join(w[0] for w in k.lstrip("-").split("-") if w) == bare]
    if initials:
        return initials
    begun = [k for k in known if k.startswith(flag) and len(flag) > 2]
    if 0 < len(begun) <= 4:
        return begun
    return difflib.get_close_matches(flag, known, n=1, cutoff=0.6)


def _either(flags):
    return flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " or " + flags[-1]


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors are one line on stderr, `error: ...`, exit status 2.

    A flag it does not know gets the one it most likely means ("did you mean
    --learning-rate?", see suggest) instead of the full usage text; `--help` still prints
    everything. Flags are never abbreviated (allow_abbrev=False): `--lr` is not silently
    taken for some --lr-... flag, nor refused as ambiguous, but suggested --learning-rate.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown flag is one line that suggests the nearest known one."""
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unrecognized(extras))
        return namespace

    def unrecognized(self, extras):
        """The message for arguments no flag takes: each unknown flag with its likeliest known one."""
        flags = [a for a in extras if a.startswith("-") and a != "-"]
        if not flags:
            return f"unrecognized argument(s): {' '.join(extras)}"
        known = [s for s in self._option_string_actions if s.startswith("--")]
        parts = []
        for flag in flags:
            name = flag.split("=", 1)[0]
            meant = suggest(name, known)
            parts.append(f"{name} (did you mean {_either(meant)}?)" if meant else name)
        return f"unrecognized argument{'s' if len(parts) > 1 else ''} {', '.join(parts)}"

    def error(self, message):
        self.exit(2, f"error: {message}; see --help\n")
