"""The WSGI (gunicorn) and ASGI (uvicorn) apps lbbench runs as servers.

Every response is 200 "ok" with the header X-Worker-Pid naming the
worker process. Environment: LBBENCH_WORK_US burns that much CPU per
request, spinning on the monotonic clock; LBBENCH_LOG, if set, gets the
pid appended per request (the ground truth of who served; gunicorn's own
access log is the other). A worker writes its pid and a newline on
stdout once it serves (gunicorn: the post_worker_init hook in
lbbench_gunicorn.py; uvicorn: the ASGI lifespan startup).
"""
import ctypes
import os
import signal
import time

WORK_NS = int(float(os.environ.get("LBBENCH_WORK_US", "0")) * 1000)
LOG = os.environ.get("LBBENCH_LOG")
_log_fd = None


def _die_with_parent():
    # A worker whose supervisor is killed outright must not stay behind
    # holding the port: PR_SET_PDEATHSIG (1) on Linux.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def announce():
    """Called in each worker once it serves."""
    _die_with_parent()
    os.write(1, b"%d\n" % os.getpid())


def _serve():
    global _log_fd
    if WORK_NS:
        stop = time.monotonic_ns() + WORK_NS
        while time.monotonic_ns() < stop:
            pass
    pid = b"%d" % os.getpid()
    if LOG:
        if _log_fd is None:
            _log_fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_log_fd, pid + b"\n")
    return pid


def wsgi(environ, start_response):
    pid = _serve()
    start_response("200 OK", [("X-Worker-Pid", pid.decode()), ("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                announce()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    pid = _serve()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"x-worker-pid", pid), (b"content-type", b"text/plain"), (b"content-length", b"3")]})
    await send({"type": "http.response.body", "body": b"ok\n"})
