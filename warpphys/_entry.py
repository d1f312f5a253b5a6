"""The ``warpphys`` console command: the command line (:mod:`warpphys.cli`) imported inside the
interrupt handling, so that Ctrl-C while torch loads ends in one line, not a traceback."""

import sys

EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C (128 + SIGINT)


def main() -> int:
    try:
        from warpphys.cli import main as cli_main
    except KeyboardInterrupt:
        print("warpphys: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return cli_main()
