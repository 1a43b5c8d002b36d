# checkdef's warm pytest server. Shipped inside the checkdef binary (hook/src/run/warm.rs writes
# it to a private directory) and started once per interpreter and environment by `checkdef run`.
#
# The parent imports pytest -- and nothing from any repository -- once, then forks one child per
# check. Each child becomes what a fresh `python -m pytest ARGS` (or `pytest ARGS`) started by
# `sh -c` in the check's directory would be: its own process group, the check's cwd, environment,
# TMPDIR, sys.path and stdio, then pytest's own entry point, then an exit with pytest's code. The
# parent never runs test code and never imports anything after start-up; whenever it cannot be
# sure that a child would behave like a fresh process, it answers "fallback" and checkdef runs the
# check in a fresh process instead.
#
# Protocol (SOCK_SEQPACKET on fd 3, one JSON object per message but the first):
#   server -> checkdef  checkdef-warm-hello NUL EXECUTABLE (NUL NAME=VALUE)...  (see _hello)
#   server -> checkdef  {"ready": true, "cache_tag": TAG, "executable": PATH, "exec_env": {...}}
#                       | {"ready": false, "reason": "..."}
#   checkdef -> server  {"run": ID, "holder": PID, "group": PGID, "isolated": BOOL, "cwd": DIR,
#                        "env": {...}, "exposed": [DIR, ...] (relative: shown as they are),
#                        "bytecode": [PYC, ...] (the store's, of its inputs),
#                        "args": [...], "mode": "module" | "script", "script": PATH,
#                        "orig_argv": [...]}
#   checkdef -> server  {"startup_missing": [NAME, ...]}  (before any run: see startup_probe.py)
#   checkdef -> server  {"compile": [[SOURCE, BLOB_ID], ...], "store": DIR}
#   server -> checkdef  {"started": ID, "pid": PID} | {"fallback": ID, "reason": "..."}
#   child  -> checkdef  {"setup_failed": ID, "reason": "..."}  (before any test code ran)
#   server -> checkdef  {"exited": ID, "status": WAIT_STATUS}
# End of file on fd 3: every child's process group is killed and the server exits.
#
# The sandbox: HOLDER is a `checkdef __sandbox --hold` process that checkdef started for this
# check under its supervisor stage, exactly as it starts a fresh check, and that has entered the
# check's sandbox (user, mount and network namespaces; the view at the repository's path). The
# child joins the check's process group PGID (led by the supervisor's guard stage, so the
# supervisor's timeout, Ctrl-C and checkdef's death reach it), takes HOLDER's stdout and stderr (the check's log), joins its namespaces with
# setns(2), then does what the rest of checkdef's sandbox entry does for a fresh check: the
# working directory, no_new_privs, a Landlock domain, and -- because no exec follows that would
# end them -- it drops every capability the user namespace gave it. All mounts are made by
# checkdef (run/isolate.rs), none here.
import sys

_STARTUP_MODULES = set(sys.modules)


class _Missing:
    """Last on sys.meta_path while pytest is imported here: the top-level names looked for and
    found nowhere (`copy` tries `org`, `subprocess` tries `msvcrt`). A fresh session looks for
    them too, on the check's sys.path: a check whose directory holds one must run fresh."""

    names = set()

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        cls.names.add(name)  # dotted too: see `looked_for`
        return None


sys.meta_path.append(_Missing)


def _exec_env():
    """The environment this process was started with (not what start-up code made of it), for
    checkdef's probe of that start-up code (run/startup_probe.rs), or None."""
    try:
        with open("/proc/self/environ", "rb") as f:
            items = [i.decode() for i in f.read().split(b"\0") if i]
        env = dict(i.split("=", 1) for i in items if "=" in i)
    except Exception:  # noqa: BLE001  (no probe: checkdef keeps the checks fresh)
        return None
    env.pop("CHECKDEF_WARM_SPAWN_ENV", None)
    return env


_EXEC_ENV = _exec_env()

import os  # noqa: E402  (already loaded at start-up: costs nothing)


def _hello():
    """Tell checkdef at once how this process was started (the first message on fd 3, see
    read_replies in warm.rs): its probe of the start-up code then runs while pytest is imported
    here. NUL-separated, as no JSON encoder is loaded yet; the ready message says it again."""
    if _EXEC_ENV is None or not sys.executable:
        return
    try:
        items = [b"checkdef-warm-hello", os.fsencode(sys.executable)]
        items.extend(("%s=%s" % kv).encode() for kv in _EXEC_ENV.items())
        os.write(3, b"\0".join(items))
    except Exception:  # noqa: BLE001  (checkdef probes after the ready message instead)
        pass


_hello()


def _startup_fds():
    """The descriptors the start-up code left open (a `logging.basicConfig(filename=...)` in a
    sitecustomize), with what each is: a fresh check has them too, so a child keeps them."""
    out = {}
    try:
        listed = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for name in listed:
        fd = int(name)
        if fd <= 3:  # stdio, and the socket to checkdef
            continue
        try:
            st = os.fstat(fd)
        except OSError:  # the listing's own
            continue
        out[fd] = (st.st_dev, st.st_ino)
    return out


_STARTUP_FDS = _startup_fds()


class _ReadEnviron(dict):
    """os.environ while the first configuration is built here: what it reads, by name (any
    other use of it -- a listing, a change -- and the configuration is not kept)."""

    def __init__(self, real):
        super().__init__(real)
        self.read, self.other = set(), False

    def __getitem__(self, k):
        self.read.add(k)
        return super().__getitem__(k)

    def get(self, k, default=None):
        self.read.add(k)
        return super().get(k, default)

    def __contains__(self, k):
        self.read.add(k)
        return super().__contains__(k)

    def _other(self, *a, **kw):
        self.other = True
        raise RuntimeError("not while the configuration is built")

    __iter__ = keys = items = values = copy = __setitem__ = __delitem__ = _other
    pop = setdefault = update = clear = __len__ = _other


# pytest versions whose first step of a session (`get_config`: a plugin manager, a Config, the
# default plugins registered, their options added) has been read for what it depends on: the
# arguments' `-p`, the program name, the invocation directory and a few variables (PYTEST_DEBUG,
# TOX_ENV_DIR), and nothing else of the process.
_PREBUILT_VERSIONS = (("9", "1"), ("9", "2"))
# What `python -m pytest` calls itself (pytest's `_get_prog_name`).
_MODULE_PROG = "python -m pytest"


def _prebuild():
    """That first step, done once here for every child (a fresh `python -m pytest` does it
    before it reads anything of the repository: ~6 ms of each session), with the values of the
    variables it read -- or None. A child uses it only when its own call would be the same
    (see `use_prebuilt`) and sets the invocation directory and arguments itself."""
    import _pytest.config as config_module

    if tuple(pytest.__version__.split(".")[:2]) not in _PREBUILT_VERSIONS:
        return None
    real = os.environ
    recording = _ReadEnviron(real)
    # As _pytest.config._main has it when it calls get_config.
    recording_version = dict.get(recording, "PYTEST_VERSION")
    dict.__setitem__(recording, "PYTEST_VERSION", pytest.__version__)
    import warnings as _warnings

    try:
        os.environ = recording
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always")
            config = config_module.get_config([], None, prog=_MODULE_PROG)
    except Exception:  # noqa: BLE001  (the children build it themselves)
        return None
    finally:
        os.environ = real
    if caught or recording.other:
        return None
    read = {k: (recording_version if k == "PYTEST_VERSION" else real.get(k)) for k in recording.read}
    return config, read


# Output printed while importing pytest would land in every check's log when fresh, and in no log
# here: catch it, and refuse to serve if there was any.
_PREBUILT = None
_capture = os.memfd_create("checkdef-warm-import")
_saved_out, _saved_err = os.dup(1), os.dup(2)
os.dup2(_capture, 1)
os.dup2(_capture, 2)
_import_error = None
try:
    # What a fresh `python -m pytest` holds once it imported pytest and pytest's own plugins
    # (`default_plugins`, which every session imports before it reads its configuration or any
    # file of the repository -- all but those a command-line `-p no:NAME` blocks, see
    # `blocked_default_plugin`), all with the sys.path it started with: runpy, pytest, the
    # plugins. Nothing else: a module a session imports later
    # is looked up on the sys.path of that moment, which pytest, its `pythonpath` option or a
    # conftest may have changed and changed back -- a child drops everything else this server
    # holds before its session (see `child_setup`).
    import runpy
    import pytest  # noqa: F401  (the point of this server)

    try:
        from _pytest.config import default_plugins as _default_plugins
    except ImportError:  # another pytest layout: the children import them as usual
        _default_plugins = ()
    for _name in _default_plugins:
        __import__("_pytest." + _name)
    import gc as _gc

    _gc.freeze()
    _PREBUILT = _prebuild()
except BaseException as e:  # noqa: BLE001  (anything at all: refuse to serve)
    _import_error = "importing pytest failed: %r" % (e,)
finally:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    os.dup2(_saved_out, 1)
    os.dup2(_saved_err, 2)
    os.close(_saved_out)
    os.close(_saved_err)
try:
    sys.meta_path.remove(_Missing)
except ValueError:
    _import_error = _import_error or "sys.meta_path changed while pytest was imported"
_MISSING = frozenset(_Missing.names)
_import_output = os.fstat(_capture).st_size
os.close(_capture)
_SESSION_BASE = frozenset(sys.modules)

# The server's own modules (standard library only), which its children drop.
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import importlib.machinery  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import builtins  # noqa: E402
import ctypes  # noqa: E402
import platform  # noqa: E402
import marshal  # noqa: E402

# The directory this file is in (sys.path[0] of this process, never a check's) and the empty
# directory it was started in: sys.path entries below the latter came from relative PYTHONPATH
# entries, which a fresh process resolves against the check's directory instead.
_HERE = os.path.dirname(os.path.realpath(__file__))
_START_CWD = os.getcwd()
# What a fresh process started the way this one was (through a shim, perhaps) has as its
# sys.orig_argv[0]: a shim execs the real interpreter by its full path.
_ARGV0 = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else sys.executable
_SAFE_PATH = bool(getattr(sys.flags, "safe_path", False))
_SERVER_PATH = list(sys.path)
# Top-level modules this process holds that a fresh interpreter had not loaded at start-up: a
# check whose directory (or relative PYTHONPATH entry) would shadow one of them must run fresh.
_PRELOADED = {n.partition(".")[0] for n in _SESSION_BASE} - {
    n.partition(".")[0] for n in _STARTUP_MODULES
}
_SUFFIXES = tuple(importlib.machinery.all_suffixes())
# Variables the start-up added or changed (`sh` exports PWD, Python may coerce LC_CTYPE, a shim
# sets its own, pyenv's PYENV_DIR among them): a child gets the same additions, each one that
# named the directory this process started in (PWD, PYENV_DIR) naming the child's instead.
_SPAWN_ENV = json.loads(os.environ.get("CHECKDEF_WARM_SPAWN_ENV", "{}"))
_STARTUP_ADDED = {
    k: v
    for k, v in os.environ.items()
    if k != "CHECKDEF_WARM_SPAWN_ENV" and _SPAWN_ENV.get(k) != v
}
# ... and the variables it removed (a sitecustomize that scrubs a token): gone in a child too.
_STARTUP_REMOVED = [k for k in _SPAWN_ENV if k not in os.environ]
# The server's own TMPDIR (a check's is another): a value the start-up made of it is a doubt.
_SERVER_TMPDIR = _SPAWN_ENV.get("TMPDIR")
os.environ.pop("CHECKDEF_WARM_SPAWN_ENV", None)
_MODULE_COUNT = len(sys.modules)


def _user_site_at_start():
    """What `site` made of the user site here at start-up -- outside the sandbox, as the user
    checkdef runs as, whose home (without HOME, from the password database) is not the
    check's: (enabled, USER_BASE, USER_SITE, whether USER_SITE was a directory and so went on
    sys.path with its .pth files), or None without `site`."""
    site = sys.modules.get("site")
    if site is None or not hasattr(site, "USER_SITE"):
        return None
    enabled, usersite = site.ENABLE_USER_SITE, site.USER_SITE
    added = bool(enabled and usersite and os.path.isdir(usersite))
    return enabled, site.USER_BASE, usersite, added


_USER_SITE = _user_site_at_start()

ctl = None
children = {}  # pidfd -> (id, pid)


def send(obj):
    ctl.send(json.dumps(obj).encode())


def doubt(req):
    """Why the child for `req` might not behave like a fresh process (known before it forks),
    or None. What the check's directory holds is looked at by the child, in the sandbox."""
    if req.get("mode") not in ("module", "script"):
        return "unknown mode"
    if not isinstance(req.get("holder"), int) or not isinstance(req.get("group"), int):
        return "no sandbox holder"
    env = req["env"]
    if "PWD" in env:
        return "the check sets PWD"
    blocked = blocked_default_plugin(req.get("args") or [])
    if blocked is not None:
        return "-p no:%s: a fresh session never imports that plugin of pytest's" % blocked
    if env.get("PYTHONINSPECT"):
        return "PYTHONINSPECT is set (a fresh interpreter ends differently)"
    for k in ("PYTHONUSERBASE", "PYTHONHOME"):
        if env.get(k) and not os.path.isabs(env[k]):
            return "%s is relative (a fresh interpreter resolves it in the check's directory)" % k
    if len(sys.modules) != _MODULE_COUNT or sys.path != _SERVER_PATH:
        raise SystemExit("the server's own state changed; refusing to serve")
    # The check starts at the repository's root (the view is mounted there).
    if isinstance(req.get("cwd"), str):
        why, entries = repository_reads(req["cwd"], req.get("exposed") or [])
        if why is not None:
            return why
        req["repository_entries"] = entries
    else:
        req["repository_entries"] = []
    return None


def blocked_default_plugin(args):
    """A plugin of pytest's own that the command line blocks (`-p no:NAME`, which pytest applies
    before it imports its default plugins, so a fresh session never imports it), or None."""
    values = []
    it = iter(args)
    for a in it:
        if a == "--":
            break
        if a == "-p":
            values.append(next(it, ""))
        elif a.startswith("-p"):
            values.append(a[2:])
    for v in values:
        # pytest strips the value before it looks at it (`-p ' no:junitxml'`).
        v = v.strip()
        if v.startswith("no:"):
            name = v[3:]
            name = name[len("_pytest."):] if name.startswith("_pytest.") else name
            if name in _default_plugins:
                return name
    return None


def shadowed(dirs):
    """Why a module this server loaded would not be what a fresh process imports from one of
    `dirs` (sys.path entries this server never searched as the check's view shows them: the
    check's directory, relative PYTHONPATH entries, its own entries in the repository), or
    None. A file on sys.path (a zip) is a doubt of its own: its names are not listed here."""
    for d in dirs:
        if d is None:
            continue
        if not isinstance(d, str):
            return "a sys.path entry that is no string (%r)" % (d,)
        if os.path.isfile(d):
            return "%s on sys.path is a file (a zip?) that the warm server cannot look into" % d
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            full = os.path.join(d, name)
            if os.path.isdir(full):
                # A directory without __init__.py is a namespace portion, which never wins over
                # a regular module or package found later on sys.path.
                loaded = sys.modules.get(name)
                package = any(
                    os.path.exists(os.path.join(full, "__init__" + suffix)) for suffix in _SUFFIXES
                )
                if not package and getattr(loaded, "__file__", None) is not None:
                    continue
                top = name
            else:
                top = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), None)
            if top in _PRELOADED:
                return "%s would shadow the module %s that the warm server loaded" % (full, top)
            wanted = looked_for(top, os.path.isdir(full))
            if wanted is not None:
                return "%s would be the module %s, which the warm server looked for and did not find" % (full, wanted)
    return None


def looked_for(top, directory):
    """The name the server looked for in vain that `top` (a module file, or a directory: a
    package, or a portion of a namespace package that may hold the missing submodule) would
    provide, or None."""
    if top is None:
        return None
    if top in _MISSING:
        return top
    if directory:
        prefix = top + "."
        return next((m for m in sorted(_MISSING) if m.startswith(prefix)), None)
    return None


def inside(p, root):
    return p == root or p.startswith(root.rstrip(os.sep) + os.sep)


_REPOSITORY_READS = {}


def repository_reads(root, exposed):
    """What this server took from the repository at `root` (outside what the view shows as it
    is, `exposed`: a `.venv`), once per repository: (why no child may run warm -- a module it
    loaded from there, which it read from the work tree, not the commit -- or None, and its own
    sys.path entries there, such as an editable install's `src`, whose files the server saw
    in the work tree and a child sees in the view)."""
    key = (root, tuple(exposed))
    if key not in _REPOSITORY_READS:
        roots = {root, os.path.realpath(root)}
        shown = [os.path.join(r, e) for r in roots for e in exposed]
        real = {}

        def repository(p):
            d, name = os.path.split(p)
            if d not in real:
                real[d] = os.path.realpath(d)
            for q in (p, os.path.join(real[d], name)):
                if any(inside(q, r) for r in roots) and not any(inside(q, e) for e in shown):
                    return True
            return False

        own = _SERVER_PATH if _SAFE_PATH else _SERVER_PATH[1:]
        entries = [p for p in own if isinstance(p, str) and os.path.isabs(p) and repository(p)]
        why = None
        for m in list(sys.modules.values()):
            f = getattr(m, "__file__", None)
            if isinstance(f, str) and os.path.isabs(f) and repository(f):
                why = "the warm server loaded %s from the repository's work tree" % f
                break
        _REPOSITORY_READS[key] = (why, entries)
    return _REPOSITORY_READS[key]


def start_doubt(req, path):
    """Why a child starting with sys.path `path` might not be what a fresh process starting
    there is, or None: an entry the server never searched in the check's view (a new one, or
    one of its own in the repository) holds a module the server loaded, or a `sitecustomize` /
    `usercustomize` that a fresh start-up runs."""
    dirs = [p for p in path if p not in _SERVER_PATH] + req["repository_entries"]
    for d in dirs:
        if not isinstance(d, str) or not os.path.isdir(d):
            continue
        for name in ("sitecustomize", "usercustomize"):
            if os.path.isdir(os.path.join(d, name)) or any(
                os.path.exists(os.path.join(d, name + suffix)) for suffix in _SUFFIXES
            ):
                return "%s holds %s, which a fresh interpreter runs at start-up" % (d, name)
    return shadowed(dirs)


class Fallback(Exception):
    """The child cannot be sure to behave like a fresh process: run the check fresh instead."""


def startup_value(name, value, cwd):
    """The value of a variable the start-up added, for a child in `cwd`: each entry of a
    path list that names the directory this server started in (a shim's `PYENV_DIR`, or a
    `$PWD/src` it put on a path) names the child's directory instead. Any other mention of
    that directory is a doubt."""
    parts = [
        rebase(p, cwd) if under_start(p) else p for p in value.split(os.pathsep)
    ]
    out = os.pathsep.join(parts)
    if _SERVER_TMPDIR and _SERVER_TMPDIR in value:
        raise Fallback("%s, set by the interpreter's start-up, names the warm server's TMPDIR" % name)
    if _START_CWD in out.replace(cwd, ""):
        raise Fallback(
            "%s, set by the interpreter's start-up, names the warm server's directory" % name
        )
    return out


def path0(req, cwd):
    """sys.path[0] of a fresh `python -m pytest` (the directory) or `pytest` (the script's)."""
    if _SAFE_PATH:
        return None
    if req["mode"] == "module":
        return cwd
    return os.path.dirname(os.path.realpath(req["script"]))


def under_start(p):
    return p == _START_CWD or p.startswith(_START_CWD + os.sep)


def rebase(p, cwd):
    return cwd + p[len(_START_CWD):]


def child_path(req, cwd):
    """The sys.path a fresh process would start with in `cwd`."""
    path = list(_SERVER_PATH)
    if not _SAFE_PATH:
        if not path or os.path.realpath(path[0]) != _HERE:
            raise RuntimeError("unexpected sys.path[0] %r" % (path[:1],))
        path = path[1:]
    path = [rebase(p, cwd) if under_start(p) else p for p in path]
    p0 = path0(req, cwd)
    if p0 is not None:
        path.insert(0, p0)
    return path


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
# capset(2) has a number of its own per architecture; Landlock's are the same everywhere.
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(platform.machine())
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_RESTRICT_SELF = 446


def check(rc, what):
    if rc < 0 or rc == -1:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))
    return rc


def enter_holder(req):
    """Join the sandbox the holder entered (see the top of this file); afterwards the check's
    directory is `req["cwd"]` as the sandbox shows it."""
    holder = req["holder"]
    os.setpgid(0, req["group"])
    out = os.open("/proc/%d/fd/1" % holder, os.O_WRONLY | os.O_CLOEXEC)
    err = os.open("/proc/%d/fd/2" % holder, os.O_WRONLY | os.O_CLOEXEC)
    if req["isolated"]:
        if SYS_CAPSET is None:
            raise Fallback("no capset(2) number known for %s" % platform.machine())
        joins = []
        for ns, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS), ("net", CLONE_NEWNET)):
            fd = os.open("/proc/%d/ns/%s" % (holder, ns), os.O_RDONLY | os.O_CLOEXEC)
            if os.fstat(fd).st_ino == os.stat("/proc/self/ns/" + ns).st_ino:
                os.close(fd)
                if ns != "net":  # `network = true` keeps the host's network
                    raise RuntimeError("the holder has no %s namespace of its own" % ns)
                continue
            joins.append((fd, flag, ns))
        for fd, flag, ns in joins:
            check(_libc.setns(fd, flag), "joining the %s namespace" % ns)
            os.close(fd)
    os.chdir(req["cwd"])
    if req["isolated"]:
        check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "setting no_new_privs")
        landlock_scope()
        drop_capabilities()
    return out, err


def landlock_scope():
    """The Landlock domain checkdef's sandbox entry enters (run/isolate.rs, landlock_scope):
    it handles only device-node creation, and being in a domain closes /proc/PID/cwd, root and fd
    of every process outside it."""
    abi = _libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                        ctypes.c_uint32(1))
    if abi < 1:
        return
    make_char, make_block = 1 << 6, 1 << 11
    attr = ctypes.c_uint64(make_char | make_block)
    fd = check(_libc.syscall(ctypes.c_long(SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr),
                             ctypes.c_size_t(8), ctypes.c_uint32(0)), "creating a Landlock ruleset")
    try:
        check(_libc.syscall(ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(fd),
                            ctypes.c_uint32(0)), "entering a Landlock domain")
    finally:
        os.close(fd)


def drop_capabilities():
    """Joining a user namespace gives every capability in it; a fresh check loses them at its
    exec (its uid is not the namespace's root). No exec follows here: drop them all, and make
    sure they are gone."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2: all empty
    check(_libc.syscall(ctypes.c_long(SYS_CAPSET), header, data), "dropping capabilities")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("CapEff:", "CapPrm:", "CapAmb:")) and int(line.split()[1], 16):
                raise RuntimeError("capabilities survived: " + line.strip())


def children_of_mine():
    out = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for t in tasks:  # a thread's children are listed under that thread
        try:
            with open("/proc/self/task/%s/children" % t) as f:
                out.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return out


def kill_leftovers(keep=()):
    """Kill and reap every child of this process but `keep`, repeatedly (killing one reparents
    its own children here): what the supervisor stage does when a fresh check's shell exits."""
    import signal

    while True:
        left = [p for p in children_of_mine() if p not in keep]
        if not left:
            return
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        for p in left:
            try:
                os.waitpid(p, 0)
            except OSError:
                pass


def child_setup(req):
    """Become the check, in the forked child, up to running pytest: returns what the module
    level runs (see the end of this file), so that the session runs as deep in the stack as a
    fresh one. Exits when it cannot set up."""
    global _PREBUILT
    rid = req["run"]
    try:
        # Read here, before the sandbox hides the store.
        bytecode = read_bytecode(req.get("bytecode") or [])
        out, err = enter_holder(req)
        cwd = os.getcwd()
        env = dict(req["env"])
        for k, v in _STARTUP_ADDED.items():
            env[k] = cwd if k == "PWD" else startup_value(k, v, cwd)
        for k in _STARTUP_REMOVED:
            env.pop(k, None)
        path = child_path(req, cwd)
        user_site = fresh_user_site(env)
        why = start_doubt(req, path)
        if why is not None:
            raise Fallback(why)
        if req["mode"] == "module":
            _, spec, code = runpy._get_module_details("pytest")
        else:
            spec = None
            with open(req["script"], "rb") as f:
                code = compile(f.read(), req["script"], "exec", dont_inherit=True)
        # Orphans of the check are reparented here, not to the server, while the check runs.
        check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "becoming a subreaper")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
    except BaseException as e:  # noqa: BLE001  (no test code ran: checkdef runs it fresh)
        try:
            reason = str(e) if isinstance(e, Fallback) else repr(e)
            send({"setup_failed": rid, "reason": reason})
        finally:
            os._exit(70)
    # Nothing of the server stays open in the check: only what the start-up left open, as in a
    # fresh process (each still the file it was then).
    ctl.detach()
    low = 3
    for fd in sorted(startup_fds_still_open()):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)
    import atexit

    atexit.register(at_session_end)

    os.environ.clear()
    os.environ.update(env)
    sys.path[:] = path
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
    # What a fresh session would not hold yet (this server's own modules): imported anew, from
    # the sys.path of the moment, if the session imports them.
    for name in [n for n in sys.modules if n not in _SESSION_BASE]:
        del sys.modules[name]
    import tempfile  # already loaded by pytest; its cached directory is the server's

    tempfile.tempdir = None
    sys.orig_argv = list(req["orig_argv"])
    if req.get("argv0_from_server"):
        sys.orig_argv[0] = _ARGV0
    if user_site is not None:
        use_user_site(*user_site)
    if bytecode:
        use_bytecode(bytecode)
    if _PREBUILT is not None and req["mode"] == "module":
        use_prebuilt(*_PREBUILT)
    # The configuration is the session's now: the server's frozen globals (never collected)
    # must not keep it, and through it the session's modules, alive at exit -- a fresh
    # interpreter collects a test module whole, where a module still alive has its globals
    # set to None before its objects' `__del__` runs.
    _PREBUILT = None
    # The __main__ a fresh interpreter starts with (runpy, or the script's start, adds the rest).
    main = type(sys)("__main__")
    main.__annotations__ = {}
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    if spec is not None:
        sys.argv = [spec.origin] + list(req["args"])
    else:
        sys.argv = [req["script"]] + list(req["args"])
        main.__file__ = req["script"]
        main.__cached__ = None
        main.__loader__ = importlib.machinery.SourceFileLoader("__main__", req["script"])
    return code, spec, main.__dict__


def fresh_user_site(env):
    """The user site a fresh start-up in the check -- as the check's user, in the sandbox,
    with `env` -- computes, as (enabled, USER_BASE, USER_SITE) when it differs from the
    server's only in name (neither is a directory: sys.path is the same), None when it is the
    same. Raises Fallback when one of them is a directory: the server's sys.path and .pth files
    are not the check's."""
    if _USER_SITE is None:
        return None
    site = sys.modules.get("site")
    if site is None or not all(
        hasattr(site, f) for f in ("_getuserbase", "_get_path", "check_enableusersite")
    ):
        raise Fallback("this Python's site module computes the user site another way")
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        # As site.main does it: whether to use it (uids, -s), then the names, always.
        enabled = site.check_enableusersite()
        base = site._getuserbase()
        usersite = None if base is None else site._get_path(base)
        if base is None:
            enabled = False
    finally:
        os.environ.clear()
        os.environ.update(saved)
    server_enabled, server_base, server_site, server_added = _USER_SITE
    if (enabled, base, usersite) == (server_enabled, server_base, server_site):
        return None
    if server_added:
        raise Fallback(
            "the warm server's user site %s is on its sys.path, not on a fresh check's (%s): "
            "it runs as another user" % (server_site, usersite)
        )
    if enabled and os.path.isdir(usersite):
        raise Fallback("a fresh check would put its user site %s on sys.path" % usersite)
    return enabled, base, usersite


def use_user_site(enabled, base, usersite):
    """What `site` (and sysconfig, if it computed its variables) says of the user site in a
    fresh check."""
    site = sys.modules["site"]
    site.ENABLE_USER_SITE, site.USER_BASE, site.USER_SITE = enabled, base, usersite
    sysconfig = sys.modules.get("sysconfig")
    config = getattr(sysconfig, "_CONFIG_VARS", None)
    if isinstance(config, dict) and "userbase" in config:
        config["userbase"] = base


def use_prebuilt(config, read):
    """Let the session's first `get_config` return the server's configuration (see
    `_prebuild`) when the call would have built the same: no plugins, the program name it was
    built with, no `-p` among the arguments (a fresh call blocks those plugins before it
    registers pytest's own), and every variable it read as it was. It sets the arguments and the
    invocation directory, as the call does, and puts pytest's own function back at once: any
    other call builds a configuration of its own."""
    import pathlib

    import _pytest.config as config_module

    original = config_module.get_config

    def get_config(args=None, plugins=None, *, prog=None):
        config_module.get_config = original
        same = (
            plugins is None
            and prog == _MODULE_PROG
            and isinstance(args, list)
            and all(isinstance(a, str) and not a.startswith("-p") for a in args)
            and all(os.environ.get(k) == v for k, v in read.items())
        )
        if not same:
            return original(args, plugins, prog=prog)
        config.invocation_params = config_module.Config.InvocationParams(
            args=args or (), plugins=plugins, dir=pathlib.Path.cwd()
        )
        _TRACE["prebuilt"] = True
        return config

    config_module.get_config = get_config


def startup_fds_still_open():
    keep = []
    for fd, identity in _STARTUP_FDS.items():
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == identity:
            keep.append(fd)
    return keep


def after_fork_in_child(random_state):
    """What a fork changes that a fresh process has as its start-up left it: Python 3.11 keeps
    the server's thread id as the main thread's `native_id`, and `random` reseeds itself in a
    forked child (a sitecustomize's `random.seed(N)` would be lost)."""
    threading = sys.modules.get("threading")
    if threading is not None:
        current = threading.current_thread()
        if hasattr(current, "_set_native_id") and current is threading.main_thread():
            current._set_native_id()
    if random_state is not None:
        sys.modules["random"].setstate(random_state)


def read_bytecode(paths):
    """The code of each hash-checked .pyc file in `paths` (named by its source's git blob id),
    by blob id; what cannot be read or is not this interpreter's is left out."""
    magic = importlib.util.MAGIC_NUMBER
    out = {}
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        # PEP 552: magic, flags (3: hash-based, checked), source hash, then the code.
        if data[:4] == magic and int.from_bytes(data[4:8], "little") == 3:
            try:
                # Here, before any test code can have an audit hook: `marshal.loads` is an
                # audited event a fresh compile does not raise.
                out[os.path.basename(p)[: -len(".pyc")]] = marshal.loads(data[16:])
            except Exception:  # noqa: BLE001
                continue
    return out


_TRACE = {"hits": 0, "prebuilt": False}


def use_bytecode(bytecode):
    """Compile a module whose source is one of these blobs by loading its code instead: what
    `compile` would have returned, with the source's path (as for bytecode from a .pyc). The
    import system does the rest as in a fresh process -- it writes the module's `__pycache__`
    (unless the check says not to), so nothing of the server's bytecode is on disk in the view,
    and a source that differs is compiled as usual."""
    import _imp
    import functools
    from importlib import _bootstrap_external

    original = _bootstrap_external.SourceLoader.source_to_code

    @functools.wraps(original)
    def source_to_code(self, data, path, *, _optimize=-1):
        if _optimize == -1 and isinstance(data, bytes) and compiles_as_in_the_server():
            # Each code object once (fixing its file name changes it in place).
            co = bytecode.pop(hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), None)
            if co is not None:
                # The event `compile` raises, for audit hooks a test installed.
                sys.audit("compile", data, path)
                _imp._fix_co_filename(co, path)
                _TRACE["hits"] += 1
                return co
        return original(self, data, path, _optimize=_optimize)

    _bootstrap_external.SourceLoader.source_to_code = source_to_code


def at_session_end():
    """Registered with `atexit` before the session starts, so it runs after every callback the
    session registered: what the supervisor stage does when a fresh check's shell exits (kill
    what the check left behind). The rest of the end is the interpreter's own finalisation, as
    in a fresh process: non-daemon threads joined, `atexit` callbacks, the standard streams
    flushed (status 120 when one cannot be), module teardown -- a `__del__` that crashes there
    crashes the check as it crashes a fresh one."""
    if os.environ.get("CHECKDEF_WARM_TRACE"):  # checkdef's own tests
        os.write(2, b"checkdef-warm: %d modules from the server's bytecode\n" % _TRACE["hits"])
    if os.environ.get("CHECKDEF_WARM_TRACE_CONFIG"):
        os.write(2, b"checkdef-warm: prebuilt configuration %s\n" % (b"used" if _TRACE["prebuilt"] else b"not used"))
    kill_leftovers()


def exit_code(c):
    """The status a fresh interpreter exits with for `SystemExit(c)`: an int as C's `long`
    (beyond 64 bits, -1), then its low byte."""
    if c is None:
        return 0
    if isinstance(c, int):
        if not -(1 << 63) <= c < (1 << 63):
            return 0xFF
        return c & 0xFF
    try:
        print(c, file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass
    return 1


def finish():
    """What interpreter shutdown does before the process ends: join non-daemon threads, run
    atexit callbacks, flush stdout and stderr."""
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        try:
            shutdown()
        except BaseException:  # noqa: BLE001
            pass
    import atexit

    atexit._run_exitfuncs()
    # A standard stream that cannot be flushed is reported and makes the exit status 120, as
    # in a fresh interpreter's finalisation.
    failed = False
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except Exception as e:  # noqa: BLE001
            failed = True
            try:
                sys.unraisablehook(_Unraisable(type(e), e, e.__traceback__, None, stream))
            except BaseException:  # noqa: BLE001
                pass
    return failed


class _Unraisable:
    """The argument of `sys.unraisablehook` (the interpreter's own type is not constructible)."""

    def __init__(self, exc_type, exc_value, exc_traceback, err_msg, obj):
        self.exc_type, self.exc_value, self.exc_traceback = exc_type, exc_value, exc_traceback
        self.err_msg, self.object = err_msg, obj


def pyc_tag():
    """The interpreter's cache tag when the bytecode this server compiles is what a check's own
    import would compile (no -O, debug ranges kept), else None: no bytecode is offered."""
    if (
        sys.flags.optimize
        or "no_debug_ranges" in getattr(sys, "_xoptions", {})
        or os.environ.get("PYTHONNODEBUGRANGES")
    ):
        return None
    return sys.implementation.cache_tag


_MAX_COMPILE = 1 << 20
# What the compiler's result depends on at run time, and how the server compiles: with this
# many frames of room under the recursion limit (which bounds how deep the compiler may nest;
# a module that needs more is left to the checks), and the integer digit limit it started with
# (which bounds literals).
_COMPILE_HEADROOM = 100
_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 0)()


def depth():
    f, n = sys._getframe(1), 0
    while f is not None:
        f, n = f.f_back, n + 1
    return n


def compiles_as_in_the_server():
    """Whether compiling here cannot fail where the server's compile succeeded: at least three
    times the server's room under the recursion limit (frames of C code count as well), and
    an integer digit limit no stricter than the server's."""
    if sys.getrecursionlimit() - depth() < 3 * _COMPILE_HEADROOM:
        return False
    digits = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    return digits == 0 or 0 < _DIGITS <= digits


def compile_blobs(msg):
    """Compile each [SOURCE, BLOB_ID] into STORE/<tag>/BLOB_ID.pyc (hash-checked, so an import
    validates it against the source it finds), from the bytes read here and only when they are
    that git blob (the layer may have changed since). A source whose compilation warns is left
    out: a check compiling it itself shows (or, with -W error, fails on) the warning."""
    tag = pyc_tag()
    store = msg.get("store")
    if tag is None or not isinstance(store, str):
        return
    out_dir = os.path.join(store, tag)
    for src, oid in msg.get("compile", []):
        dst = os.path.join(out_dir, oid + ".pyc")
        try:
            # Checks wait while this runs: generated modules of megabytes compile in them.
            if os.path.exists(dst) or os.path.getsize(src) > _MAX_COMPILE:
                continue
            with open(src, "rb") as f:
                data = f.read()
            if hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() != oid:
                continue
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(depth() + _COMPILE_HEADROOM)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    code = compile(data, src, "exec", dont_inherit=True, optimize=0)
            finally:
                sys.setrecursionlimit(limit)
            if caught:
                continue
            pyc = importlib._bootstrap_external._code_to_hash_pyc(
                code, importlib.util.source_hash(data), checked=True
            )
            os.makedirs(out_dir, mode=0o700, exist_ok=True)
            tmp = "%s.%d.tmp" % (dst, os.getpid())
            with open(tmp, "wb") as f:
                f.write(pyc)
            os.replace(tmp, dst)
        except Exception:  # noqa: BLE001  (no bytecode: the check compiles it itself)
            continue


def handle(msg):
    global _MISSING
    if "compile" in msg:
        compile_blobs(msg)
        return None
    if "startup_missing" in msg:
        # From checkdef's probe of the start-up code, which ran before this file did.
        names = msg["startup_missing"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SystemExit("malformed request")
        _MISSING = _MISSING | frozenset(names)
        return None
    rid = msg.get("run")
    if rid is None:
        raise SystemExit("malformed request")
    why = doubt(msg)
    if why is not None:
        send({"fallback": rid, "reason": why})
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    # What the server imported is in the collector's permanent generation (frozen once, before
    # the configuration a child may take is built: see the imports above): the child's
    # collections never walk, and so never copy, those pages. The configuration stays
    # collectable: a frozen cycle is never collected, and it holds the session a child builds on
    # it, so its test modules would outlive the collection at exit and lose their globals before
    # their objects' `__del__` runs, where a fresh interpreter collects them whole.
    # Only a `random` the start-up imported (and may have seeded) is carried over; one pytest
    # imported was seeded from the system, as in a fresh process, and reseeds in the child.
    random_state = sys.modules["random"].getstate() if "random" in _STARTUP_MODULES else None
    pid = os.fork()
    if pid == 0:
        global _in_child
        _in_child = True
        after_fork_in_child(random_state)
        return msg
    children[os.pidfd_open(pid)] = (rid, pid)
    send({"started": rid, "pid": pid})
    return None


def armed_timer():
    """Why no child may run warm because of a timer the start-up armed, or None: interval
    timers (`setitimer`, `alarm`: a CPU-time watchdog) and POSIX timers are not inherited by a
    forked child, so its test would run without what a fresh process has."""
    import signal

    for which, name in (
        (signal.ITIMER_REAL, "ITIMER_REAL"),
        (signal.ITIMER_VIRTUAL, "ITIMER_VIRTUAL"),
        (signal.ITIMER_PROF, "ITIMER_PROF"),
    ):
        if signal.getitimer(which) != (0.0, 0.0):
            return "the interpreter's start-up armed a timer (%s), which a forked child lacks" % name
    try:
        with open("/proc/self/timers") as f:
            if f.read().strip():
                return "the interpreter's start-up made a POSIX timer, which a forked child lacks"
    except OSError:
        pass
    return None


def reap(pidfd):
    rid, pid = children.pop(pidfd)
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    # What the check left outside its process group was reparented to the check's child, then,
    # when it ended, here: kill it now, as the supervisor kills a fresh check's leftovers.
    kill_leftovers(keep={p for _, p in children.values()})
    send({"exited": rid, "status": status})


def shutdown():
    import signal

    for _, pid in children.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    children.clear()
    kill_leftovers()


def main():
    global ctl
    ctl = socket.socket(fileno=3)
    if _import_error is not None:
        send({"ready": False, "reason": _import_error})
        return
    if _import_output:
        send({"ready": False, "reason": "importing pytest printed %d bytes" % _import_output})
        return
    if not hasattr(os, "pidfd_open") or not hasattr(runpy, "_run_module_as_main"):
        send({"ready": False, "reason": "this Python lacks os.pidfd_open or runpy"})
        return
    why = armed_timer()
    if why is not None:
        send({"ready": False, "reason": why})
        return
    # Orphans of a check whose child ended come here (see reap), never to init.
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        send({"ready": False, "reason": "cannot become a child subreaper"})
        return
    send(
        {
            "ready": True,
            "cache_tag": pyc_tag(),
            "executable": sys.executable,
            "exec_env": _EXEC_ENV,
        }
    )
    poll = select.poll()
    poll.register(ctl.fileno(), select.POLLIN)
    try:
        while True:
            for fd, _ in poll.poll():
                if fd == ctl.fileno():
                    msg = ctl.recv(1 << 20)
                    if not msg:
                        return None
                    before = set(children)
                    req = handle(json.loads(msg))
                    if _in_child:
                        return req
                    for pidfd in set(children) - before:
                        poll.register(pidfd, select.POLLIN)
                else:
                    poll.unregister(fd)
                    reap(fd)
    finally:
        if not _in_child:
            shutdown()


_in_child = False

# The session of a check runs here, at the module level of this file: its frames sit on this
# module's one frame and runpy's `_run_code`, as a fresh `python -m pytest`'s sit on runpy's
# `_run_module_as_main` and `_run_code` -- a test that counts on the recursion limit sees the
# same depth. (A `pytest` script runs one frame deeper than in a fresh process, whose script
# is the bottom frame.)
if __name__ == "__main__":
    _req = main()
    if _req is not None:
        _code, _spec, _globals = child_setup(_req)
        try:
            try:
                if _spec is not None:
                    runpy._run_code(_code, _globals, None, "__main__", _spec)
                else:
                    exec(_code, _globals)
                _exit = 0
            except SystemExit as _e:
                _exit = exit_code(_e.code)
            except KeyboardInterrupt:
                finish()
                import signal

                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
                _exit = 130
            except BaseException:  # noqa: BLE001  (uncaught: Python prints it, exit 1)
                import traceback

                traceback.print_exc()
                _exit = 1
        except BaseException:  # noqa: BLE001
            os._exit(120)
        # The interpreter ends the check as it ends a fresh one (see `at_session_end`).
        raise SystemExit(_exit)
