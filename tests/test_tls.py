"""`serve --tls-cert/--tls-key`: the page over HTTPS and the channel over WSS (browsers give camera access
only on localhost or HTTPS)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients.client import LiveClient

WEB_ROOT = str(Path(__file__).resolve().parent.parent / "clients" / "web")


def self_signed(directory: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


async def test_https_page_and_wss_channel(start_server, tmp_path):
    cert, key = self_signed(tmp_path)
    srv = await start_server(rooms=("show",), tls_cert=cert, tls_key=key, web_root=WEB_ROOT)
    trust = ssl.create_default_context(cafile=cert)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:
        page = await http.get(f"https://127.0.0.1:{srv.config.port}/")
        assert page.status == 200 and "live-relay" in await page.text()
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        async with LiveClient(f"wss://127.0.0.1:{srv.config.port}/ws", "show", srv.token("show", "v"),
                              http=http) as client:
            ack = await client.comment("over TLS")
            assert ack["seq"] >= 1
        # Plain HTTP on the TLS port is refused.
        plain = aiohttp.ClientSession()
        try:
            failed = False
            try:
                await plain.get(f"http://127.0.0.1:{srv.config.port}/healthz")
            except aiohttp.ClientError:
                failed = True
            assert failed
        finally:
            await plain.close()
