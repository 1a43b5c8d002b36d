# checkdef's start-up probe (hook/src/run/startup_probe.rs writes it next to nothing else and
# runs it as `INTERPRETER -S probe.py MARK` under ptrace and seccomp, in an empty directory of
# its own, with the environment the warm server was started with).
#
# It runs what the warm server runs outside any sandbox -- the environment's start-up code
# (`site`: `.pth` import lines, `sitecustomize`, `usercustomize`) and the import of pytest and
# its default plugins -- between marks the tracer sees (a stat of MARK + "open" / "close"), so
# that it can tell the file names that code looks at from those of Python's own start-up.
import os
import sys

MARK = sys.argv[1]


def mark(what):
    try:
        os.stat(MARK + what)
    except OSError:
        pass


# As the server's start-up has it when `site` runs: no script directory yet, and relative
# entries (a relative PYTHONPATH) made absolute -- site does that itself, with a getcwd(2)
# that is Python's, not the environment's.
del sys.path[0]
import site  # noqa: E402  (with -S: imported, not run)

site.removeduppaths()

mark("open")
site.main()
mark("close")

mark("open")
import pytest  # noqa: E402,F401

try:
    from _pytest.config import default_plugins
except ImportError:
    default_plugins = ()
for name in default_plugins:
    __import__("_pytest." + name)
mark("close")
mark("done")
os._exit(0)
