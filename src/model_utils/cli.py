"""How every entry point runs: user errors as one line, internal errors with their traceback.

`run(main)` calls `main(argv)`. A UserError (src/errors.py) or a missing file ends the program
with `error: <message>` on stderr and exit status 2. `--debug` on the command line, or
MS_ZOO_DEBUG=1 in the environment, shows the traceback of those too. Other exceptions are bugs
and propagate with their traceback (exit status 1).
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from src.errors import UserError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "MS_ZOO_DEBUG"
USER_ERROR_STATUS = 2


def run(main: Callable, argv: list[str] | None = None):
    """Run an entry point's `main(argv)` with the error policy above; returns what main returns."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        return main(argv)
    except (UserError, FileNotFoundError) as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_STATUS) from None
