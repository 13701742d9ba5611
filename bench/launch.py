"""Run one command and report what the kernel says of it alone: ``launch.py REPORT -- ARGV...``.

``ru_maxrss`` survives ``exec``: a child forked (or vforked) from a large
parent starts with the parent's peak, so the benchmark does not measure its
processes as its own children. This launcher is small (the standard library
only, no site packages); it forks, the child execs ARGV, and the launcher
reaps it with ``os.wait4`` and writes the child's own figures to REPORT as
JSON: exit code, wall, user and system CPU seconds, peak RSS in KiB. The
child's stdin, stdout and stderr are the launcher's.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    report, command = argv[0], argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(report, "w") as out:
        json.dump(
            {
                "rc": code,
                "wall": wall,
                "utime": usage.ru_utime,
                "stime": usage.ru_stime,
                "maxrss_kb": usage.ru_maxrss,
            },
            out,
        )
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
