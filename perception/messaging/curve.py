"""Optional CURVE encryption and client authentication, with ZeroMQ certificate files
(`zmq.auth.create_certificates`: `NAME.key` public, `NAME.key_secret` public + secret).

The publisher is the CURVE server: its secret certificate, and a directory of the public certificates of
the clients it accepts (a ZAP handler, zmq.auth.ThreadAuthenticator, checks each client's key). A
subscriber is a CURVE client: its secret certificate and the server's public certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from perception.errors import ConfigError


@dataclass(frozen=True)
class CurveServerKeys:
    secret_file: Path   # the publisher's NAME.key_secret
    clients_dir: Path   # public certificates (*.key) of the authorised subscribers, read when the publisher starts


@dataclass(frozen=True)
class CurveClientKeys:
    secret_file: Path       # the subscriber's NAME.key_secret
    server_public_file: Path  # the publisher's NAME.key


def create_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a new key pair `directory/NAME.key` and `NAME.key_secret`; returns (public, secret) paths."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


def load_key(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) z85 keys of a certificate file; ConfigError naming the file if unusable."""
    try:
        public_key, secret_key = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"CURVE certificate {path}: {e}") from None
    if secret and secret_key is None:
        raise ConfigError(f"CURVE certificate {path}: has no secret key (use the .key_secret file)")
    return public_key, secret_key


def start_server(context: zmq.Context, socket: zmq.Socket, keys: CurveServerKeys) -> ThreadAuthenticator:
    """Make `socket` a CURVE server that accepts only the clients in keys.clients_dir."""
    if not Path(keys.clients_dir).is_dir():
        raise ConfigError(f"CURVE clients directory {keys.clients_dir} does not exist")
    public_key, secret_key = load_key(keys.secret_file, secret=True)
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(keys.clients_dir))
    socket.curve_secretkey = secret_key
    socket.curve_publickey = public_key
    socket.curve_server = True
    return authenticator


def configure_client(socket: zmq.Socket, keys: CurveClientKeys) -> None:
    public_key, secret_key = load_key(keys.secret_file, secret=True)
    server_key, _ = load_key(keys.server_public_file, secret=False)
    socket.curve_secretkey = secret_key
    socket.curve_publickey = public_key
    socket.curve_serverkey = server_key
