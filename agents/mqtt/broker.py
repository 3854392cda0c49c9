"""A local mosquitto broker for demos, tests and benchmarks: a generated config, a free port, a clean stop.

Not a production broker: it listens on one address, allows anonymous clients and keeps
nothing on disk (persistence off), so a restart loses its sessions and queued messages,
which is what the agent's own hold-until-PUBACK is tested against.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from ..errors import BrokerUnreachable

#: Debian installs mosquitto in /usr/sbin, which is not on a non-root user's PATH.
KNOWN_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in KNOWN_PATHS if Path(p).is_file()), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """``with Mosquitto() as broker:`` a mosquitto on ``broker.port``; ``stop``/``start`` keep the port."""

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, max_queued: int = 100_000,
                 users: Mapping[str, str] | None = None):
        """``users`` (name -> password): only they may connect; without it, anyone may."""
        binary = find_mosquitto()
        if binary is None:
            raise BrokerUnreachable("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self._dir = Path(tempfile.mkdtemp(prefix="graphrun-mosquitto-"))
        self.config = self._dir / "mosquitto.conf"
        self.log = self._dir / "mosquitto.log"
        login = "allow_anonymous true\n"
        if users:
            login = f"allow_anonymous false\npassword_file {self._password_file(users)}\n"
        self.config.write_text(
            f"listener {self.port} {host}\n"
            f"{login}"
            "persistence false\n"
            f"user {getpass.getuser()}\n"  # as root mosquitto would switch to user mosquitto, who can't read our files
            f"max_queued_messages {max_queued}\n"  # a session's backlog while its client is away
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    def _password_file(self, users: Mapping[str, str]) -> Path:
        """Hashed with mosquitto_passwd (beside mosquitto in its Debian package)."""
        tool = shutil.which("mosquitto_passwd") or str(Path(self.binary).parent.parent / "bin" / "mosquitto_passwd")
        path = self._dir / "passwords"
        path.touch(mode=0o600)
        for name, password in users.items():
            subprocess.run([tool, "-b", str(path), name, password], check=True, capture_output=True)
        return path

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._process.poll() is not None:
                raise BrokerUnreachable(f"mosquitto exited with {self._process.returncode}: "
                                        f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerUnreachable(f"mosquitto did not listen on {self.host}:{self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop at once (SIGKILL): the broker vanishes as a crashed or unplugged one would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
