"""The ``warpphys`` console command: Ctrl-C while the command line loads (torch, scipy: a few
seconds) is held until the imports are done, then ends the command in one line. (An interrupt
inside a library's import can leave that library half-initialised, and the next import of it
fail in ways that have nothing to do with the user's command.)"""

import signal
import sys

EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C (128 + SIGINT)


def main() -> int:
    held = []
    previous = signal.signal(signal.SIGINT, lambda *_: held.append(True))
    try:
        from warpphys.cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        print("warpphys: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return cli_main()
