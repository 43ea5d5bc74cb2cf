"""The embedded server: starts once, is shared, listens on loopback with passwords, stops on request."""

from __future__ import annotations

import psycopg
import pytest

from rec_orchestration.db.embedded import EmbeddedPostgres


@pytest.fixture()
def server(tmp_path_factory):
    # A short path outside $HOME: as root, the server runs as an unprivileged user that must traverse it.
    root = tmp_path_factory.mktemp("pg")
    instance = EmbeddedPostgres(root, port=55499)
    yield instance
    instance.destroy()


def test_start_reuse_and_stop(server):
    status = server.ensure_running()
    assert status.running and status.port == 55499
    again = EmbeddedPostgres(server.root, port=55499).ensure_running()  # another process/handle
    assert again.pid == status.pid
    app = server.app_settings("rec")
    with psycopg.connect(app.conninfo()) as conn:
        user, superuser = conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
                                       ).fetchone()
        assert (user, superuser) == ("rec", False)
        listen = conn.execute("SELECT inet_server_addr()::text").fetchone()[0]
        assert listen.startswith("127.0.0.1")
    assert server.stop()
    assert not server.status().running
    assert not server.stop()
    # Data survives a restart.
    assert server.ensure_running().running


def test_tcp_connections_need_the_password(server):
    server.ensure_running()
    app = server.app_settings("rec")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(app.__class__(app.host, app.port, app.user, None, app.dbname).conninfo(),
                        connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(app.__class__(app.host, app.port, "postgres", "wrong", app.dbname).conninfo(),
                        connect_timeout=5)
