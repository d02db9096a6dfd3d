"""`juice up`'s probe of its inference port (juice/cli.py `port_in_use`): a live listener is "in use",
what a stopped server leaves behind is not."""

from __future__ import annotations

import socket

from juice.cli import port_in_use


def test_a_listening_port_is_in_use_on_every_spelling_of_the_host() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        assert port_in_use("localhost", port)
        assert port_in_use("0.0.0.0", port)
    assert not port_in_use("127.0.0.1", port)


def test_time_wait_connections_of_a_stopped_server_leave_the_port_free() -> None:
    """The API's keep-alive connection to the inference server, closed from the server's side, leaves
    TIME_WAIT entries on the port for a minute; a restart (uvicorn binds with SO_REUSEADDR) must work."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.close()  # the server closes first: its side of the connection goes to TIME_WAIT
        client.recv(1)
        client.close()
    assert not port_in_use("127.0.0.1", port)


def test_an_unresolvable_host_is_left_for_the_server_to_report() -> None:
    assert not port_in_use("no-such-host.invalid", 8001)
