"""The `nemesis-fast` command's entry point, outside the package: importing nemesis_fast imports torch (seconds), and
Ctrl-C then ends the command in one line too, as it does once the command runs (nemesis_fast.cli.main)."""

import sys


def main() -> int:
    try:
        from nemesis_fast.cli import main as run
    except KeyboardInterrupt:
        print("nemesis-fast: interrupted while starting; nothing was done", file=sys.stderr)
        return 130
    return run()
