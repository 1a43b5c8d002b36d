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

class Missing:
    """Last on sys.meta_path while the start-up code runs: the top-level modules it looks for
    and finds nowhere (a `try: import localconf`), which a check's directory might hold. (The
    server has one of its own for pytest's import, `_Missing`: neither program imports the
    other.)"""

    names = set()

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        # Dotted too: a namespace package the check's directory extends (`acme.localconf`).
        cls.names.add(name)
        return None


# Outside the marks (a getcwd between them is a doubt of its own).
HERE = os.getcwd()
sys.meta_path.append(Missing)
mark("open")
site.main()
# Every absolute sys.path directory outside this one, looked at between the marks, so that a
# kept verdict goes when one appears (Python remembers a missing entry from its own start-up,
# before the marks, and the start-up code's imports never look at it again).
for p in list(sys.path):
    if isinstance(p, str) and os.path.isabs(p) and not (p == HERE or p.startswith(HERE + os.sep)):
        try:
            os.stat(p)
        except OSError:
            pass
mark("close")
if Missing in sys.meta_path:
    sys.meta_path.remove(Missing)

mark("open")
import pytest  # noqa: E402,F401

try:
    from _pytest.config import default_plugins
except ImportError:
    default_plugins = ()
for name in default_plugins:
    __import__("_pytest." + name)
mark("close")
# Told through a mark's name (outside the marks: the tracer reads it, nothing else counts).
# (site's own tries of sitecustomize and usercustomize are the warm server's start_doubt's.)
tried = Missing.names - {"sitecustomize", "usercustomize"}
mark("missing:" + ",".join(sorted(n for n in tried if all(p.isidentifier() for p in n.split(".")))))
mark("done")
os._exit(0)
