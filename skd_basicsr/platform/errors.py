"""The error type shared by every part of the package, and the hint its messages share."""
import difflib


class OptionError(ValueError):
    """An option file or a command-line option that cannot be used as given.

    The ``basicsr`` command prints it as one line and exits with status 2, before anything is trained.
    """


def did_you_mean(name, choices):
    """' Did you mean X?' for the choice closest to a misspelt ``name`` (case first), or '' when none is close."""
    same_letters = [c for c in choices if c.lower() == str(name).lower()]
    close = same_letters or difflib.get_close_matches(str(name), choices, n=1)
    return f' Did you mean {close[0]}?' if close else ''
