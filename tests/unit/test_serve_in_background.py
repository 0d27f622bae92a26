"""A background waitress server stops cleanly, even when its loop already lost its trigger."""
import socket

from kloyst.runner import Stopper, start_http
from kloyst.serving import serve_in_background


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_stop_closes_the_listener_and_ends_the_loop_thread():
    server = start_http(_app, "127.0.0.1", 0, Stopper(), threads=1)
    stop = serve_in_background(server, name="stop-test")
    port = server.effective_port
    stop()
    assert _refused(port)


def test_stop_still_closes_everything_when_the_trigger_was_closed_before_it():
    server = start_http(_app, "127.0.0.1", 0, Stopper(), threads=1)
    stop = serve_in_background(server, name="stop-test")
    port = server.effective_port
    server.trigger.close()  # what a loop that failed on its trigger leaves behind: pulling it is EBADF
    stop(timeout=3)
    assert _refused(port)
