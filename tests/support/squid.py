"""A real forward proxy for tests: Debian's squid, run by the test with its own config, port and files.

`squid -N` runs in the foreground (no service, no root daemon); everything it writes is in its own
directory. Started as root, squid drops to `cache_effective_user` (Debian's `proxy`), so the directory is
made readable and writable for that user. Tunnels leave from `OUTGOING_ADDRESS`, so a receiver can tell a
connection that came through the proxy from one that did not. Squid writes a CONNECT to its access log when
the tunnel closes (`connects()` reads them).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from tests.support.ports import free_port

SQUID = "/usr/sbin/squid"
OUTGOING_ADDRESS = "127.0.0.3"  # what receivers see as the proxy's address (all of 127/8 is local on Linux)


class Squid:
    """`denied_ports`: CONNECT to these is refused by an ACL (403); `users`: Basic credentials required (407
    without them); `hosts`: what squid's own lookups answer (a CONNECT naming a host is resolved by squid).
    Every other port may be tunnelled to (squid's default allows only 443)."""

    def __init__(
        self,
        denied_ports: tuple[int, ...] = (),
        users: dict[str, str] | None = None,
        hosts: dict[str, str] | None = None,
    ) -> None:
        if shutil.which(SQUID) is None:
            raise RuntimeError(f"{SQUID} is missing: deploy/local/system-packages.sh test installs it (Debian squid)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hookfleet-squid-"))
        self._denied_ports = denied_ports
        self._users = users or {}
        self._hosts = hosts or {}  # squid's own name lookups: host -> address (its hosts file, not the system's)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """squid's process (with -N, the one process that relays every tunnel)."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str) -> str:
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            f"http_port 127.0.0.1:{self.port}",
            f"pid_filename {self.dir}/squid.pid",
            f"cache_log {self.dir}/cache.log",
            f"access_log stdio:{self.dir}/access.log squid",
            f"coredump_dir {self.dir}",
            "cache deny all",
            "cache_mem 8 MB",
            "netdb_filename none",
            "pinger_enable off",
            "shutdown_lifetime 0 seconds",
            f"tcp_outgoing_address {OUTGOING_ADDRESS}",
            "acl tunnel_ports port 1-65535",
            f"hosts_file {self.dir}/hosts",
        ]
        if os.geteuid() == 0:  # squid refuses to keep root: it switches to this user
            lines.append("cache_effective_user proxy")
        if self._denied_ports:
            lines.append(f"acl denied_ports port {' '.join(str(p) for p in self._denied_ports)}")
            lines.append("http_access deny CONNECT denied_ports")
        if self._users:
            lines.append(f"auth_param basic program /usr/lib/squid/basic_ncsa_auth {self.dir}/passwd")
            lines.append("acl authenticated proxy_auth REQUIRED")
            lines.append("http_access deny !authenticated")
        lines += ["http_access allow CONNECT tunnel_ports", "http_access deny all"]
        return "\n".join(lines) + "\n"

    def _write_passwords(self) -> None:
        entries = []
        for user, password in self._users.items():
            hashed = (
                subprocess.run(
                    ["openssl", "passwd", "-apr1", "-stdin"], input=password.encode(), capture_output=True, check=True
                )
                .stdout.decode()
                .strip()
            )
            entries.append(f"{user}:{hashed}\n")
        (self.dir / "passwd").write_text("".join(entries))

    def start(self, timeout_s: float = 30.0) -> Squid:
        if self._users:
            self._write_passwords()
        (self.dir / "hosts").write_text("".join(f"{address} {host}\n" for host, address in self._hosts.items()))
        conf = self.dir / "squid.conf"
        conf.write_text(self._config())
        if os.geteuid() == 0:
            proxy = pwd.getpwnam("proxy")
            os.chown(self.dir, proxy.pw_uid, proxy.pw_gid)
        os.chmod(self.dir, 0o755)  # noqa: S103 - squid, as its own user, reads its config and writes its logs here
        for path in self.dir.iterdir():
            os.chmod(path, 0o644)
        stderr = (self.dir / "stderr.log").open("wb")
        self._process = subprocess.Popen([SQUID, "-N", "-f", str(conf)], stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + timeout_s
        while not self._accepts():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"squid did not start listening within {timeout_s} s:\n{self.logs()}")
            time.sleep(0.05)
        return self

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def access_log(self) -> list[str]:
        path = self.dir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def connects(self) -> list[str]:
        """What each logged CONNECT named (`address:port`), in the order the tunnels closed."""
        return [line.split()[6] for line in self.access_log() if len(line.split()) > 6 and line.split()[5] == "CONNECT"]

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self.dir / name).read_text(errors='replace')[-4000:]}"
            for name in ("stderr.log", "cache.log", "access.log")
            if (self.dir / name).exists()
        )

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
