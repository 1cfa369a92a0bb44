#!/usr/bin/python3
# r3map: remote mmap for virtual machines.
# Copyright the r3map authors.  Licensed under the Apache License 2.0.
#
# A small QMP client for the QEMU tests, with nothing but the Python
# standard library.  As a program, one connection runs a list of
# steps in order, so that an event caused by a command is not missed
# (QEMU sends events only to the clients connected at the time):
#
#   qmp.py [--timeout S] QMP-SOCKET STEP...
#     cmd NAME [JSON-ARGS]        run a command; print its return as JSON
#     event NAME [KEY=VALUE...]   wait for an event (since connecting)
#                                 whose data match; print it
#     status STATUS               wait until query-status says STATUS
#     migration STATUS            wait until query-migrate says STATUS
#                                 (completed, cancelled, failed, ...);
#                                 print the final query-migrate reply.
#                                 A failed migration fails the step
#                                 unless STATUS is failed.
#   qmp.py [--timeout S] serial SERIAL-SOCKET LINE...
#                                 send lines to a chardev socket (the
#                                 guest's serial console)
#
# Each step prints one JSON line.  Exit status 0 when every step
# succeeded, 1 on a QMP error or a timeout (reported on stderr), 2 on
# bad usage.  The timeout (default 60 s) bounds every step.
#
# As a module: QMP(path, timeout).cmd(name, **args), .wait_event(name,
# match), .close().

import json
import socket
import sys
import time


class QMPError(Exception):
    pass


class QMP:
    def __init__(self, path, timeout=60.0):
        self.timeout = timeout
        self.events = []
        # Every event read, kept (wait_event drops those it passes
        # over): a caller may time the steps of a migration with them.
        self.seen = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                # QEMU may not have created its socket yet.
                if time.monotonic() > deadline:
                    raise QMPError("cannot connect to %s" % path)
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        # QEMU can send an event before the greeting: seen once in 126
        # runs of bench-qemu-migrate, a RESUME as the client connected
        # to a guest that was starting.  Keep such events.
        greeting = self._read()
        while "event" in greeting:
            self.events.append(greeting)
            greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError("not a QMP greeting: %r" % greeting)
        self.cmd("qmp_capabilities")

    def _read(self, deadline=None):
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
        line = self.file.readline()
        if not line:
            raise QMPError("QEMU closed the QMP connection")
        msg = json.loads(line)
        if "event" in msg:
            self.seen.append(msg)
        return msg

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QMPError("%s: %s: %s" % (name, reply["error"].get("class"),
                                                reply["error"].get("desc")))
            return reply.get("return")

    def wait_event(self, name, match=None, timeout=None):
        match = match or {}
        deadline = time.monotonic() + (timeout or self.timeout)

        def matches(ev):
            if ev.get("event") != name:
                return False
            data = ev.get("data", {})
            return all(str(data.get(k)) == v for k, v in match.items())

        while True:
            for i, ev in enumerate(self.events):
                if matches(ev):
                    del self.events[: i + 1]
                    return ev
            self.events.clear()
            try:
                ev = self._read(deadline)
            except socket.timeout:
                raise QMPError("no event %s %s within %g s"
                               % (name, match, timeout or self.timeout))
            if "event" in ev:
                self.events.append(ev)

    def poll(self, what, key, want, fail=()):
        deadline = time.monotonic() + self.timeout
        last = None
        while time.monotonic() < deadline:
            last = self.cmd(what)
            got = last.get(key)
            if got == want:
                return last
            if got in fail:
                raise QMPError("%s: %s is %s, not %s: %s"
                               % (what, key, got, want, json.dumps(last)))
            time.sleep(0.05)
        raise QMPError("%s: %s is still %s after %g s, not %s"
                       % (what, key, last and last.get(key), self.timeout, want))

    def close(self):
        self.sock.close()


def run_steps(path, timeout, steps):
    q = QMP(path, timeout)
    try:
        while steps:
            step = steps.pop(0)
            if step == "cmd":
                name = steps.pop(0)
                args = {}
                if steps and steps[0].startswith("{"):
                    args = json.loads(steps.pop(0))
                print(json.dumps(q.cmd(name, **args)), flush=True)
            elif step == "event":
                name = steps.pop(0)
                match = {}
                while steps and "=" in steps[0] and not steps[0].startswith("{"):
                    k, v = steps.pop(0).split("=", 1)
                    match[k] = v
                print(json.dumps(q.wait_event(name, match)), flush=True)
            elif step == "status":
                want = steps.pop(0)
                print(json.dumps(q.poll("query-status", "status", want,
                                        fail=("internal-error", "guest-panicked"))),
                      flush=True)
            elif step == "migration":
                want = steps.pop(0)
                fail = () if want == "failed" else ("failed",)
                print(json.dumps(q.poll("query-migrate", "status", want, fail=fail)),
                      flush=True)
            else:
                raise ValueError("unknown step '%s'" % step)
    finally:
        q.close()


def serial(path, timeout, lines):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    for line in lines:
        s.sendall(line.encode() + b"\n")
    s.close()


def main(argv):
    timeout = 60.0
    if len(argv) >= 2 and argv[0] == "--timeout":
        timeout = float(argv[1])
        argv = argv[2:]
    if len(argv) < 2:
        print(__doc__ if __doc__ else "usage: see the head of qmp.py", file=sys.stderr)
        return 2
    try:
        if argv[0] == "serial":
            serial(argv[1], timeout, argv[2:])
        else:
            run_steps(argv[0], timeout, argv[1:])
    except (ValueError, IndexError) as e:
        print("qmp.py: bad usage: %s" % e, file=sys.stderr)
        return 2
    except (QMPError, OSError, socket.timeout) as e:
        print("qmp.py: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
