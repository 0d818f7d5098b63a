# Attune's python zygote: an interpreter started once per (pack, version) environment, with the
# pack's preload modules imported, that forks one child per invocation.
#
# The runner starts it as `<interpreter> <interpreter args> zygote.py <control fd> <module>...`
# with the environment and working directory a cold start of the same pack would get (minus
# the per-invocation ATTUNE_* variables), so everything an interpreter reads only when it starts
# (PYTHONPATH, PYTHONHASHSEED, -u, -O, -X...) is already what a cold start would see.
#
# Protocol, one JSON object per SOCK_SEQPACKET message:
#   zygote -> runner (control socket):
#     {"op": "up"}                         preloading done, ready to fork
#     {"op": "failed", "error": "..."}     a preload module failed; the zygote exits
#     {"op": "ready", "pid": N}  + 1 fd    a pre-forked child and the socket to hand it its job
#     {"op": "exit", "pid": N, "status": W} a child ended (W: the raw wait status)
#   runner -> zygote (control socket):
#     {"op": "target", "n": N}              keep N children forked ahead
#     {"op": "fork"}                        pre-fork one more child
#     {"op": "taken", "pid": N}             that child was given a job
#     {"op": "quit"}                        stop: idle children exit, running ones finish
#   runner -> child (its own socket):
#     {"argv": [...], "script": "...", "env": [[k, v], ...], "cwd": "..."} + 3 fds (0, 1, 2)
#   child -> runner (the same socket), when the script ends through the interpreter's normal
#   way out (not a signal, not os._exit):
#     {"exit": N}                           after stdout and stderr are flushed and closed
#
# A child gives the script what a cold `<interpreter> <args> <script>` would: sys.argv,
# sys.orig_argv, sys.path[0], os.environ (with what the interpreter added at start, such as a
# coerced LC_CTYPE), the working directory, a fresh __main__, and the same way out (SystemExit,
# an uncaught exception's traceback, non-daemon threads, atexit, flushed streams).
#
# A child is contained like a cold leader: its own process group, SIGKILL when the zygote dies
# (the zygote itself dies with the runner), and a child subreaper, so what it starts stays
# below it. The zygote is *not* a subreaper: what a finished child leaves behind goes to the
# runner, which kills it as it would for a cold process.
import os
import sys


def _zygote_main():
    import array
    import builtins  # noqa: F401 - imported here, once, for every child (_run_main)
    import ctypes
    import gc
    import importlib.machinery  # noqa: F401 - as builtins
    import json
    import select
    import signal
    import socket
    import types  # noqa: F401 - as builtins

    control = socket.socket(fileno=int(sys.argv[1]))
    # What the interpreter added to its environment when it started (LC_CTYPE when it coerced
    # the C locale): the job's environment has the same start-up part, so these are the names
    # it lacks, and a child puts them back as a cold start would have them.
    startup = dict(os.environ)
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

    def send(msg, fds=()):
        data = json.dumps(msg).encode()
        if fds:
            control.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            control.send(data)

    # Preload: what the pack asks for, imported once here so every child has it already.
    for name in sys.argv[2:]:
        try:
            __import__(name)
        except BaseException as e:  # noqa: BLE001 - any failure is reported, then we stop
            send({"op": "failed", "error": "cannot preload %s: %s: %s" % (name, type(e).__name__, e)})
            os._exit(3)

    # The compiler initialises itself on first use (most of a millisecond): once, here.
    compile(b"pass\n", "<attune-warm-up>", "exec", dont_inherit=True)
    # Everything allocated so far is shared with every child: kept out of the collector's
    # sight, so a collection in a child does not touch (and copy) every page of it.
    gc.collect()
    gc.freeze()

    # SIGCHLD wakes the loop through a pipe; the child puts every disposition back.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    me = os.getpid()
    idle = {}  # pid -> True, children forked ahead and waiting
    running = set()
    target = [0]  # children to keep forked ahead (the runner says how many)
    quitting = False
    send({"op": "up"})

    def fork_one():
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            control.close()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(wake_r)
            os.close(wake_w)
            os.setpgid(0, 0)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != me:
                os._exit(1)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            return theirs, startup
        theirs.close()
        send({"op": "ready", "pid": pid}, [ours.fileno()])
        ours.close()
        idle[pid] = True
        return None

    while True:
        if quitting and not idle and not running:
            os._exit(0)
        try:
            readable, _, _ = select.select([control, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                os.read(wake_r, 512)
            except BlockingIOError:
                pass
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                idle.pop(pid, None)
                was_running = pid in running
                running.discard(pid)
                try:
                    send({"op": "exit", "pid": pid, "status": status})
                except OSError:
                    pass
                # The replacement of a child that ran is forked now, after its invocation,
                # rather than beside it (see "taken").
                if was_running and not quitting and len(idle) < target[0]:
                    child = fork_one()
                    if child is not None:
                        return child
        if control in readable:
            try:
                data = control.recv(65536)
            except OSError:
                data = b""
            if not data:
                # The runner is gone or let go of us: children never started are useless.
                quitting = True
                _kill_all(idle)
                control.close()
                # Nothing more will come; wait for the children without the control socket.
                while running or idle:
                    try:
                        pid, _ = os.waitpid(-1, 0)
                    except ChildProcessError:
                        break
                    idle.pop(pid, None)
                    running.discard(pid)
                os._exit(0)
            msg = json.loads(data)
            op = msg.get("op")
            if op == "target" and not quitting:
                target[0] = max(0, int(msg.get("n", 0)))
                while len(idle) < target[0]:
                    child = fork_one()
                    if child is not None:
                        return child
            elif op == "fork" and not quitting:
                child = fork_one()
                if child is not None:
                    return child
            elif op == "taken":
                pid = msg.get("pid")
                if idle.pop(pid, None):
                    running.add(pid)
                # A fork costs a core for about a millisecond: while enough children wait, the
                # replacement waits for this one to finish instead of competing with it.
                if not quitting and len(idle) < max(1, target[0] // 2):
                    child = fork_one()
                    if child is not None:
                        return child
            elif op == "quit":
                quitting = True
                _kill_all(idle)


def _kill_all(pids):
    # Children that never started a job are of no use once the zygote quits.
    # (`signal` is imported in _zygote_main's scope, not this module's: import it here.)
    import signal

    for pid in list(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _rehearse():
    # While it waits, a child walks the path its job will take (parse, module, loader,
    # compile), so the pages of the zygote that path writes to are copied now, not while an
    # invocation waits.
    import importlib.machinery
    import json
    import types

    json.loads('{"argv": ["/x"], "script": "/x", "env": [["A", "b"]], "cwd": "/"}')
    os.path.dirname(os.path.realpath(os.getcwd()))
    importlib.machinery.SourceFileLoader("__main__", "/x")
    types.ModuleType("__main__")
    compile(b"", "/x", "exec", dont_inherit=True)
    dict(os.environ)


def _child_main(sock, startup):
    # Waits for its one job, then becomes that invocation exactly as a cold start would be.
    import array
    import json
    import socket

    _rehearse()
    fds = array.array("i")
    msg, anc, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(3 * fds.itemsize))
    if not msg:
        os._exit(0)
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    global _report
    _report = sock  # close-on-exec: nothing the action starts inherits it
    job = json.loads(msg)
    if len(fds) != 3:
        os._exit(70)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(job["cwd"])
    os.environ.clear()
    for k, v in job["env"]:
        os.environ[k] = v
    for k, v in startup.items():
        if k not in os.environ:
            os.environ[k] = v
    script = job["script"]
    if hasattr(sys, "orig_argv") and sys.argv[0] in sys.orig_argv:
        # The command line a cold start would have had: ours up to this file, then the script
        # (an interpreter started through a wrapper shows the same real binary either way).
        sys.orig_argv = sys.orig_argv[: sys.orig_argv.index(sys.argv[0])] + [script]
    sys.argv = list(job["argv"])

    # A cold `python script.py` puts the script's real directory first on sys.path, unless
    # isolated (-I) or safe-path (-P) mode says not to.
    if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)):
        sys.path[0] = os.path.dirname(os.path.realpath(script))
    return script


def _run_main(script):
    import builtins
    import importlib.machinery
    import types

    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__cached__ = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", script)
    main.__builtins__ = builtins
    main.__annotations__ = {}
    sys.modules["__main__"] = main
    with open(script, "rb") as f:
        source = f.read()
    code = compile(source, script, "exec", dont_inherit=True)
    exec(code, main.__dict__)


def _finish(code):
    # What a cold interpreter does on its way out that an action can see: wait for its
    # non-daemon threads, run atexit handlers, flush stdout and stderr.
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:  # noqa: BLE001
            pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # noqa: BLE001
            code = 120
    # The output is complete and the status known: say so now rather than after the kernel
    # has torn this process down (the zygote's report of the exit follows either way).
    for fd in (0, 1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        _report.send(b'{"exit": %d}' % code)
    except BaseException:  # noqa: BLE001
        pass
    os._exit(code)


def _exit_code(e):
    # The way CPython turns SystemExit into an exit status.
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except BaseException:  # noqa: BLE001
        pass
    return 1


_script = _zygote_main()
_script = _child_main(*_script)
del _zygote_main, _child_main
try:
    _run_main(_script)
except SystemExit as _e:
    _finish(_exit_code(_e))
except BaseException as _e:  # noqa: BLE001 - like an uncaught exception in a cold start
    _tb = _e.__traceback__
    # Our own frames are not the action's: the traceback starts in the script, as cold.
    while _tb is not None and _tb.tb_frame.f_code.co_filename != _script:
        _tb = _tb.tb_next
    # (None when the script never ran, as for a SyntaxError: then, as cold, no traceback.)
    # The hook prints the exception's own traceback, so that is the one to trim.
    _e.__traceback__ = _tb
    sys.excepthook(type(_e), _e, _tb)
    _finish(1)
_finish(0)
