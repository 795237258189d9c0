"""NATS over TLS: the bot and workers trust the operator's CA, and refuse a server they cannot
verify."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from labbot.config import load_settings
from labbot.errors import SandboxUnavailable
from labbot.remote import bus
from tests.servers import nats_server

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl command")


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=labbot test CA", "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


async def test_tls_with_the_operators_ca(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    with nats_server(tmp_path / "nats", ["w1"], tls=(cert, key)) as nats:
        assert nats.url.startswith("tls://")
        trusted = load_settings(LABBOT_DATA_DIR=tmp_path, LABBOT_NATS_TLS_CA=ca, **nats.bot_env())
        nc = await bus.connect(trusted, "test")
        try:
            assert nc.connected_url.scheme == "tls"
            await nc.flush()
        finally:
            await nc.close()
        untrusted = load_settings(LABBOT_DATA_DIR=tmp_path, **nats.bot_env())
        with pytest.raises(SandboxUnavailable, match="cannot be reached"):
            await bus.connect(untrusted, "test")
