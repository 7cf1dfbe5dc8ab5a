"""The `nemesis-fast` command's entry point, outside the package: importing nemesis_fast imports torch (seconds), and
Ctrl-C then ends the command in one line too, as it does once the command runs (nemesis_fast.cli.main)."""

import os
import sys


def says_interrupted() -> bool:
    """Whether this process prints the line Ctrl-C ends a command with: under torchrun, Ctrl-C reaches every process
    of a machine, and the first of them (LOCAL_RANK 0) speaks for them all."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0")


def interrupted_while_starting() -> int:
    """Ctrl-C before a command began its work (the package's import, the arguments' parsing): its line, where this
    process says it, and the exit status."""
    if says_interrupted():
        print("nemesis-fast: interrupted while starting; nothing was done", file=sys.stderr)
    return 130


def main() -> int:
    try:
        from nemesis_fast.cli import main as run
    except KeyboardInterrupt:
        return interrupted_while_starting()
    return run()
