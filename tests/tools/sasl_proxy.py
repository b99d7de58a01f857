#!/usr/bin/env python3
"""A SASL-terminating proxy in front of a Kafka broker that has no working SASL (tansu 0.6), for
testlake's secured-Kafka tests (tests/tests/secure_kafka.rs).

Each connection is authenticated as a Kafka broker does it, then spliced to the broker:

- ApiVersions is forwarded to the broker; its answer lists SaslHandshake (key 17) and
  SaslAuthenticate (key 36) at the versions served here (v0-1 each), in place of the broker's.
- SaslHandshake v1 names the mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (others:
  UNSUPPORTED_SASL_MECHANISM, with the list).
- SaslAuthenticate v0-1 carries the exchange: PLAIN is checked against the user table; SCRAM is
  scramp's (a maintained third-party implementation of RFC 5802/7677), with credentials salted
  per user at start. A failure answers SASL_AUTHENTICATION_FAILED with Kafka's message, then
  closes the connection.
- Any other request before authentication closes the connection (ILLEGAL_SASL_STATE in Kafka).

After a successful exchange the bytes flow both ways unchanged. Outcomes are logged on stderr,
with the user and mechanism, never a password.

    sasl_proxy.py --listen PORT --upstream HOST:PORT --user NAME:PASSWORD [--user …]

prints "listening PORT" on stdout once it accepts connections.
"""

import argparse
import asyncio
import struct
import sys

from scramp import ScramMechanism

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SERVED = {SASL_HANDSHAKE: (0, 1), SASL_AUTHENTICATE: (0, 1)}
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = ("PLAIN",) + SCRAM


def log(message):
    print(f"sasl_proxy: {message}", file=sys.stderr, flush=True)


# --- the wire: big-endian integers, strings, unsigned varints, tagged fields ----------------


def int16(data, pos):
    return struct.unpack_from(">h", data, pos)[0], pos + 2


def int32(data, pos):
    return struct.unpack_from(">i", data, pos)[0], pos + 4


def string(data, pos):
    length, pos = int16(data, pos)
    if length < 0:
        return None, pos
    return data[pos : pos + length].decode(), pos + length


def uvarint(data, pos):
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def put_uvarint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def skip_tagged_fields(data, pos):
    count, pos = uvarint(data, pos)
    for _ in range(count):
        _tag, pos = uvarint(data, pos)
        size, pos = uvarint(data, pos)
        pos += size
    return pos


def put_string(value):
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def put_bytes(value):
    return struct.pack(">i", len(value)) + value


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def write_frame(writer, payload):
    writer.write(struct.pack(">i", len(payload)) + payload)


def request_header(frame):
    """(api_key, api_version, correlation_id, body offset) of a request with a v1 header (the
    SASL requests' at the versions served here)."""
    api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame, 0)
    _client_id, pos = string(frame, 8)
    return api_key, api_version, correlation_id, pos


def with_sasl(body, version):
    """An ApiVersions response body listing the SASL keys at the versions served here."""
    error, pos = int16(body, 0)
    if error != 0:
        # An unsupported version is answered in v0's format; the client asks again, lower.
        return body
    flexible = version >= 3
    entries = []
    if flexible:
        count, pos = uvarint(body, pos)
        count -= 1
    else:
        count, pos = int32(body, pos)
    for _ in range(count):
        key, low, high = struct.unpack_from(">hhh", body, pos)
        pos += 6
        start = pos
        if flexible:
            pos = skip_tagged_fields(body, pos)
        entries.append((key, low, high, body[start:pos]))
    rest = body[pos:]
    entries = [e for e in entries if e[0] not in SERVED]
    entries += [(key, low, high, b"\x00" if flexible else b"") for key, (low, high) in SERVED.items()]
    entries.sort()
    out = bytearray(struct.pack(">h", error))
    out += put_uvarint(len(entries) + 1) if flexible else struct.pack(">i", len(entries))
    for key, low, high, tags in entries:
        out += struct.pack(">hhh", key, low, high) + tags
    return bytes(out + rest)


# --- the exchange ---------------------------------------------------------------------------


class Failed(Exception):
    pass


class Exchange:
    """One connection's SASL exchange for a mechanism; `step` takes the client's bytes and
    returns the server's, or raises `Failed`. `done` once authenticated."""

    def __init__(self, mechanism, users, scram):
        self.mechanism, self.users, self.done, self.user = mechanism, users, False, None
        if mechanism in SCRAM:
            self.server = ScramMechanism(mechanism).make_server(lambda name: scram[mechanism][name])
            self.steps = 0

    def failure(self):
        return Failed(
            "Authentication failed during authentication due to invalid credentials with SASL "
            f"mechanism {self.mechanism}"
        )

    def step(self, token):
        if self.mechanism == "PLAIN":
            parts = token.split(b"\x00")
            if len(parts) != 3:
                raise self.failure()
            authzid, user, password = (p.decode(errors="replace") for p in parts)
            self.user = user
            if authzid not in ("", user) or self.users.get(user) != password:
                raise self.failure()
            self.done = True
            return b""
        try:
            self.steps += 1
            if self.steps == 1:
                first = token.decode()
                # gs2 header, then the bare message: n=<user>,r=<nonce>
                bare = dict(a.split("=", 1) for a in first.split(",", 2)[2].split(",") if "=" in a)
                self.user = bare.get("n")
                self.server.set_client_first(first)
                return self.server.get_server_first().encode()
            self.server.set_client_final(token.decode())
            self.done = True
            return self.server.get_server_final().encode()
        except Exception:  # scramp's ScramException, an unknown user (KeyError), bad UTF-8
            raise self.failure() from None


async def authenticate(reader, writer, upstream_reader, upstream_writer, users, scram):
    """Answers requests until the connection is authenticated (True) or refused (False)."""
    exchange = None
    while True:
        frame = await read_frame(reader)
        api_key, api_version, correlation_id, pos = request_header(frame)
        if api_key == API_VERSIONS:
            write_frame(upstream_writer, frame)
            await upstream_writer.drain()
            response = await read_frame(upstream_reader)
            # ApiVersions responses have a v0 header (the correlation id) at every version.
            write_frame(writer, response[:4] + with_sasl(response[4:], api_version))
        elif api_key == SASL_HANDSHAKE and api_version in (0, 1):
            if api_version == 0:
                # v0 is followed by raw tokens without Kafka framing: not served here.
                log("refused SaslHandshake v0 (only v1 is served)")
                return False
            mechanism, _ = string(frame, pos)
            error = 0 if mechanism in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
            mechanisms = struct.pack(">i", len(MECHANISMS)) + b"".join(put_string(m) for m in MECHANISMS)
            write_frame(writer, struct.pack(">ih", correlation_id, error) + mechanisms)
            if error:
                log(f"unsupported mechanism {mechanism!r}")
            else:
                exchange = Exchange(mechanism, users, scram)
        elif api_key == SASL_AUTHENTICATE and api_version in (0, 1) and exchange is not None:
            length, pos = int32(frame, pos)
            token = frame[pos : pos + length]
            lifetime = struct.pack(">q", 0) if api_version >= 1 else b""
            try:
                answer = exchange.step(token)
            except Failed as failure:
                body = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + put_string(str(failure)) + put_bytes(b"")
                write_frame(writer, struct.pack(">i", correlation_id) + body + lifetime)
                await writer.drain()
                log(f"authentication failed: user={exchange.user!r} mechanism={exchange.mechanism}")
                return False
            body = struct.pack(">h", 0) + put_string(None) + put_bytes(answer)
            write_frame(writer, struct.pack(">i", correlation_id) + body + lifetime)
            if exchange.done:
                await writer.drain()
                log(f"authenticated: user={exchange.user!r} mechanism={exchange.mechanism}")
                return True
        else:
            log(f"request key {api_key} v{api_version} before authentication: closing")
            return False
        await writer.drain()


async def splice(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(reader, writer, upstream, users, scram):
    host, port = upstream
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    except OSError as e:
        log(f"cannot reach the broker at {host}:{port}: {e}")
        writer.close()
        return
    try:
        authenticated = await authenticate(reader, writer, upstream_reader, upstream_writer, users, scram)
    except (asyncio.IncompleteReadError, ConnectionError, struct.error, UnicodeDecodeError):
        authenticated = False
    if not authenticated:
        writer.close()
        upstream_writer.close()
        return
    await asyncio.gather(splice(reader, upstream_writer), splice(upstream_reader, writer))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the broker")
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD (repeatable)")
    args = parser.parse_args()
    users = dict(u.split(":", 1) for u in args.user)
    # Salted once per user and mechanism, as a broker stores SCRAM credentials.
    scram = {
        mechanism: {name: ScramMechanism(mechanism).make_auth_info(password) for name, password in users.items()}
        for mechanism in SCRAM
    }
    host, port = args.upstream.rsplit(":", 1)
    upstream = (host, int(port))
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, upstream, users, scram), "127.0.0.1", args.listen
    )
    print(f"listening {args.listen}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
