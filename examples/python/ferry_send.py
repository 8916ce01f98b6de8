#!/usr/bin/env python3
"""ferry_send.py: a ferry sender in Python 3, standard library only.

Written from docs/PROTOCOL.md (protocol version 1) alone. It sends files,
folders and text messages to a ferry server, proves a shared token when the
server asks for one, resumes interrupted files after a reconnect, answers
PING, and checks every RECEIPT's SHA-256 against its own.

    python3 ferry_send.py photo.jpg notes/ 127.0.0.1:9000
    python3 ferry_send.py --message "lunch at 12?" 127.0.0.1:9000
    FERRY_TOKEN=s3cret python3 ferry_send.py --clients 20 a.bin 127.0.0.1:9000
    python3 ferry_send.py --self-test

Exit codes (the same as the TypeScript sender's): 0 everything delivered and
verified, 1 internal error, 2 usage, 3 connection failure, 4 refused by the
server, 5 integrity failure (hash or size mismatch).
"""

import argparse
import hashlib
import hmac
import json
import mimetypes
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import unicodedata

# --- Protocol constants (PROTOCOL.md sections 4-7) ----------------------------

MAGIC = b"FRRY"
VERSION = 1
DEFAULT_MAX_FRAME = 1 << 20
MAX_SAFE = (1 << 53) - 1
HEADER = struct.Struct(">IB")
AUTH_CONTEXT = b"ferry-auth-v1"

HELLO, WELCOME, AUTH, AUTH_OK, ERROR = 0x01, 0x02, 0x03, 0x04, 0x0F
FILE, ACCEPT, DATA, END, RECEIPT, END_DIGEST = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15
PING, PONG, MESSAGE, MESSAGE_ACK = 0x20, 0x21, 0x30, 0x31
TYPE_NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", AUTH: "AUTH", AUTH_OK: "AUTH_OK", ERROR: "ERROR",
    FILE: "FILE", ACCEPT: "ACCEPT", DATA: "DATA", END: "END", RECEIPT: "RECEIPT", END_DIGEST: "END_DIGEST",
    PING: "PING", PONG: "PONG", MESSAGE: "MESSAGE", MESSAGE_ACK: "MESSAGE_ACK",
}

CAP_RESUME, CAP_MESSAGES, CAP_AUTH, CAP_HEARTBEAT = 0x1, 0x2, 0x4, 0x8
FILE_FLAG_RESUME = 0x1
RECEIPT_FLAG_DUPLICATE = 0x1

ERROR_CODES = {
    "BAD_FRAME": 1, "FRAME_TOO_LARGE": 2, "TRUNCATED_FRAME": 3, "UNKNOWN_FRAME_TYPE": 4,
    "BAD_MAGIC": 5, "UNSUPPORTED_VERSION": 6, "UNEXPECTED_FRAME": 7, "AUTH_REQUIRED": 8,
    "AUTH_FAILED": 9, "RATE_LIMITED": 10, "SERVER_BUSY": 11, "HANDSHAKE_TIMEOUT": 12,
    "IDLE_TIMEOUT": 13, "PEER_DEAD": 14, "SHUTTING_DOWN": 15, "TLS_MISMATCH": 16,
    "CONNECTION_FAILED": 17, "BAD_NAME": 20, "NAME_EXISTS": 21, "FILE_TOO_LARGE": 22,
    "INSUFFICIENT_STORAGE": 23, "DISK_FULL": 24, "SIZE_MISMATCH": 25, "HASH_MISMATCH": 26,
    "BAD_OFFSET": 27, "FILE_BUSY": 28, "BAD_HEADER": 29, "NOT_AN_IMAGE": 30,
    "TYPE_MISMATCH": 31, "TOO_MANY_PIXELS": 32, "CORRUPT_IMAGE": 33, "UNKNOWN_FILE": 34,
    "MESSAGE_TOO_LARGE": 40, "INTERNAL": 50, "IO_ERROR": 51,
}
ERROR_NAMES = {n: name for name, n in ERROR_CODES.items()}

# Section 12: reconnecting cannot help after these.
FATAL_CODES = {"AUTH_FAILED", "AUTH_REQUIRED", "RATE_LIMITED", "UNSUPPORTED_VERSION", "BAD_MAGIC",
               "TLS_MISMATCH"}
# Connection-level codes after which a sender reconnects and resumes (sections 8.4, 12, 14).
RECONNECT_CODES = {"SHUTTING_DOWN", "PEER_DEAD", "SERVER_BUSY", "IDLE_TIMEOUT", "HANDSHAKE_TIMEOUT",
                   "CONNECTION_FAILED", "TRUNCATED_FRAME"}
INTEGRITY_CODES = {"HASH_MISMATCH", "SIZE_MISMATCH"}
# Our own decoding failures; the server is told with ERROR id 0 before we close.
LOCAL_PROTOCOL_CODES = {"BAD_FRAME", "FRAME_TOO_LARGE", "UNKNOWN_FRAME_TYPE", "UNEXPECTED_FRAME"}

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_CONNECTION, EXIT_REFUSED, EXIT_INTEGRITY = 0, 1, 2, 3, 4, 5


class FerryError(Exception):
    """A failure with a stable code name (section 15); `id` names a file or message, 0 = connection."""

    def __init__(self, code, message, id=0, remote=False):
        super().__init__(message)
        self.code = code
        self.id = id
        self.remote = remote


def exit_code_for(code):
    if code in INTEGRITY_CODES:
        return EXIT_INTEGRITY
    if code in RECONNECT_CODES:
        return EXIT_CONNECTION
    return EXIT_REFUSED


# --- Encoding (sections 2 and 6) ----------------------------------------------

def frame(ftype, payload=b""):
    return HEADER.pack(len(payload), ftype) + payload


def safe_u64(value, field):
    if not 0 <= value <= MAX_SAFE:
        raise ValueError("%s %d is above 2^53-1" % (field, value))
    return struct.pack(">Q", value)


def str8(text):
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("string of %d bytes does not fit a str8" % len(raw))
    return bytes([len(raw)]) + raw


def str16(text):
    raw = text.encode("utf-8")
    if len(raw) > 65535:
        raise ValueError("string of %d bytes does not fit a str16" % len(raw))
    return struct.pack(">H", len(raw)) + raw


def encode(m):
    """Encodes a message dict (bytes fields as bytes, tokens as int) to a whole frame."""
    k = m["kind"]
    if k == "hello":
        return frame(HELLO, MAGIC + struct.pack(">HII", m["version"], m["capabilities"], m["maxFrameSize"]))
    if k == "welcome":
        return frame(WELCOME, struct.pack(">HIIB", m["version"], m["capabilities"], m["maxFrameSize"],
                                          len(m["nonce"])) + m["nonce"])
    if k == "auth":
        return frame(AUTH, m["mac"])
    if k == "auth_ok":
        return frame(AUTH_OK)
    if k == "error":
        return frame(ERROR, struct.pack(">HI", m["wireCode"], m["id"]) + str16(m["message"]))
    if k == "file":
        return frame(FILE, struct.pack(">IB", m["id"], m["flags"]) + safe_u64(m["size"], "size")
                     + m["sha256"] + safe_u64(m["mtimeMs"], "mtimeMs") + str16(m["name"]) + str8(m["mime"]))
    if k == "accept":
        return frame(ACCEPT, struct.pack(">I", m["id"]) + safe_u64(m["offset"], "offset"))
    if k == "data":
        return data_header(m["id"], m["offset"], len(m["bytes"])) + m["bytes"]
    if k == "end":
        return frame(END, struct.pack(">I", m["id"]))
    if k == "end_digest":  # this client hashes first and never sends it, but knows its layout (section 6)
        return frame(END_DIGEST, struct.pack(">I", m["id"]) + m["sha256"])
    if k == "receipt":
        return frame(RECEIPT, struct.pack(">IB", m["id"], m["flags"]) + safe_u64(m["size"], "size")
                     + m["sha256"] + str16(m["storedName"]))
    if k in ("ping", "pong"):
        return frame(PING if k == "ping" else PONG, struct.pack(">Q", m["token"]))
    if k == "message":
        return frame(MESSAGE, struct.pack(">I", m["id"]) + m["text"].encode("utf-8"))
    if k == "message_ack":
        return frame(MESSAGE_ACK, struct.pack(">I", m["id"]))
    raise ValueError("unknown kind %r" % k)


def data_header(file_id, offset, length):
    """The 17 bytes before a DATA frame's file bytes: header, id, offset."""
    return HEADER.pack(12 + length, DATA) + struct.pack(">I", file_id) + safe_u64(offset, "offset")


# --- Decoding (sections 2, 4 and 6) -------------------------------------------

class Reader:
    """Reads the fields of one payload; any shortfall or bad value raises `code`."""

    def __init__(self, payload, code):
        self.p = payload
        self.at = 0
        self.code = code

    def fail(self, why):
        raise FerryError(self.code, "Cannot decode frame: " + why)

    def take(self, n):
        if self.at + n > len(self.p):
            self.fail("payload ends before its last field")
        out = self.p[self.at:self.at + n]
        self.at += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def safe(self, field):
        v = self.u64()
        if v > MAX_SAFE:
            self.fail("%s %d is above 2^53-1" % (field, v))
        return v

    def text(self, raw):
        try:
            return bytes(raw).decode("utf-8")  # strict: no overlongs, surrogates or cut sequences
        except UnicodeDecodeError:
            self.fail("string is not well-formed UTF-8")

    def str8(self):
        return self.text(self.take(self.u8()))

    def str16(self):
        return self.text(self.take(self.u16()))

    def rest(self):
        out = self.p[self.at:]
        self.at = len(self.p)
        return out

    def done(self):
        if self.at != len(self.p):
            self.fail("%d bytes after the last field" % (len(self.p) - self.at))


def decode(ftype, payload):
    """Decodes one frame's payload into a message dict, or raises FerryError."""
    if ftype not in TYPE_NAMES:
        raise FerryError("UNKNOWN_FRAME_TYPE", "Cannot decode frame: unknown type 0x%02x" % ftype)
    r = Reader(payload, "BAD_HEADER" if ftype == FILE else "BAD_FRAME")
    if ftype == HELLO:
        if bytes(payload[:4]) != MAGIC and len(payload) >= 4:
            raise FerryError("BAD_MAGIC", "Cannot decode HELLO: bad magic")
        r.take(4)
        m = {"kind": "hello", "version": r.u16(), "capabilities": r.u32(), "maxFrameSize": r.u32()}
    elif ftype == WELCOME:
        m = {"kind": "welcome", "version": r.u16(), "capabilities": r.u32(), "maxFrameSize": r.u32()}
        n = r.u8()
        if n not in (0, 32):
            r.fail("nonce length %d is not 0 or 32" % n)
        m["nonce"] = bytes(r.take(n))
    elif ftype == AUTH:
        m = {"kind": "auth", "mac": bytes(r.take(32))}
    elif ftype == AUTH_OK:
        m = {"kind": "auth_ok"}
    elif ftype == ERROR:
        wire = r.u16()
        m = {"kind": "error", "code": ERROR_NAMES.get(wire, "INTERNAL"), "wireCode": wire, "id": r.u32(),
             "message": r.str16()}
    elif ftype == FILE:
        m = {"kind": "file", "id": r.u32(), "flags": r.u8(), "size": r.safe("size"),
             "sha256": bytes(r.take(32)), "mtimeMs": r.safe("mtimeMs"), "name": r.str16(), "mime": r.str8()}
    elif ftype == ACCEPT:
        m = {"kind": "accept", "id": r.u32(), "offset": r.safe("offset")}
    elif ftype == DATA:
        m = {"kind": "data", "id": r.u32(), "offset": r.safe("offset"), "bytes": bytes(r.rest())}
    elif ftype in (END, MESSAGE_ACK):
        m = {"kind": "end" if ftype == END else "message_ack", "id": r.u32()}
    elif ftype == END_DIGEST:
        m = {"kind": "end_digest", "id": r.u32(), "sha256": bytes(r.take(32))}
    elif ftype == RECEIPT:
        m = {"kind": "receipt", "id": r.u32(), "flags": r.u8(), "size": r.safe("size"),
             "sha256": bytes(r.take(32)), "storedName": r.str16()}
    elif ftype in (PING, PONG):
        m = {"kind": "ping" if ftype == PING else "pong", "token": r.u64()}
    else:  # MESSAGE
        m = {"kind": "message", "id": r.u32()}
        m["text"] = r.text(r.rest())
    r.done()
    return m


class FrameDecoder:
    """Reassembles frames from a byte stream however it was split (section 4)."""

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self.buf = bytearray()

    def push(self, data):
        self.buf += data

    def next(self):
        """The next whole frame as (type, payload), or None if more bytes are needed."""
        if len(self.buf) < 5:
            return None
        length, ftype = HEADER.unpack_from(self.buf)
        if length > self.max_frame:  # decided on the header alone, before any payload arrives
            raise FerryError("FRAME_TOO_LARGE", "Cannot read frame: length %d exceeds limit %d"
                             % (length, self.max_frame))
        if len(self.buf) < 5 + length:
            return None
        payload = bytes(self.buf[5:5 + length])
        del self.buf[:5 + length]
        return ftype, payload

    def end(self):
        if self.buf:
            raise FerryError("TRUNCATED_FRAME", "Connection closed inside a frame (%d bytes pending)"
                             % len(self.buf))


# --- One connection -------------------------------------------------------------

class Connection:
    """A handshaken connection: frames in and out, PINGs answered as they arrive."""

    def __init__(self, host, port, opts):
        self.opts = opts
        self.decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        self.server_max = DEFAULT_MAX_FRAME
        self.server_caps = 0
        self.ping_token = 0
        self.last_received = self.last_ping = time.monotonic()
        try:
            raw = socket.create_connection((host, port), timeout=opts.timeout)
        except OSError as e:
            raise FerryError("CONNECTION_FAILED", "Cannot connect to %s:%d: %s" % (host, port, e.strerror or e))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock = raw
        if opts.tls:
            import ssl
            context = ssl.create_default_context(cafile=opts.ca)
            try:
                self.sock = context.wrap_socket(raw, server_hostname=host)
            except (ssl.SSLError, OSError) as e:
                raw.close()
                raise FerryError("TLS_MISMATCH", "TLS with %s:%d failed: %s" % (host, port, e))
        self.sock.settimeout(opts.dead_after)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise FerryError("PEER_DEAD", "Server stopped reading for %.0f s" % self.opts.dead_after)
        except OSError as e:
            raise FerryError("CONNECTION_FAILED", "Connection lost while sending: %s" % (e.strerror or e))

    def _fill(self, timeout):
        """Reads what is available within `timeout` seconds into the decoder; False if nothing came."""
        if not self._pending_tls():
            ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            if not ready:
                return False
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError as e:
            raise FerryError("CONNECTION_FAILED", "Connection lost: %s" % (e.strerror or e))
        if not data:
            self.decoder.end()  # TRUNCATED_FRAME if the server stopped mid-frame
            raise FerryError("CONNECTION_FAILED", "Server closed the connection")
        self.last_received = time.monotonic()
        self.decoder.push(data)
        return True

    def _pending_tls(self):
        return hasattr(self.sock, "pending") and self.sock.pending() > 0

    def receive(self, wait, handshake_done=True):
        """The next frame other than PING/PONG, waiting up to `wait` seconds (None if none came).

        PINGs are answered at once (section 14). An idle spell of `heartbeat` seconds sends our
        own PING; `dead_after` seconds without a single byte is PEER_DEAD.
        """
        deadline = time.monotonic() + wait
        while True:
            got = self.decoder.next()
            if got is not None:
                m = decode(*got)
                if m["kind"] == "ping" and handshake_done:
                    self.send(encode({"kind": "pong", "token": m["token"]}))
                    continue
                if m["kind"] == "pong" and handshake_done:
                    continue
                if m["kind"] == "error" and m["id"] == 0:
                    raise FerryError(m["code"], m["message"], 0, remote=True)
                return m
            remaining = deadline - time.monotonic()
            # Look at the socket before judging silence: bytes may be waiting after a long send.
            if self._fill(0 if remaining <= 0 else min(remaining, self.opts.heartbeat / 2)):
                continue
            now = time.monotonic()
            silent = now - self.last_received
            if silent >= self.opts.dead_after:
                raise FerryError("PEER_DEAD", "Server sent nothing for %.0f s" % silent)
            if handshake_done and silent >= self.opts.heartbeat and now - self.last_ping >= self.opts.heartbeat:
                self.ping_token += 1
                self.last_ping = now
                self.send(encode({"kind": "ping", "token": self.ping_token}))
            if now >= deadline:
                return None

    def expect(self, wait=None):
        """Waits for the next non-heartbeat frame (up to dead_after of silence)."""
        m = self.receive(float("inf") if wait is None else wait)
        if m is None:
            raise FerryError("PEER_DEAD", "No answer from the server")
        return m

    def handshake(self, token):
        self.send(encode({"kind": "hello", "version": VERSION,
                          "capabilities": CAP_RESUME | CAP_MESSAGES | CAP_HEARTBEAT,
                          "maxFrameSize": DEFAULT_MAX_FRAME}))
        m = self.receive(self.opts.timeout, handshake_done=False)
        if m is None:
            raise FerryError("CONNECTION_FAILED", "No WELCOME within %.0f s" % self.opts.timeout)
        if m["kind"] != "welcome":
            raise FerryError("UNEXPECTED_FRAME", "Expected WELCOME, got %s" % m["kind"].upper())
        if m["version"] != VERSION:
            raise FerryError("UNSUPPORTED_VERSION", "Server speaks protocol version %d" % m["version"])
        self.server_max = m["maxFrameSize"]
        self.server_caps = m["capabilities"]
        if m["capabilities"] & CAP_AUTH:
            if token is None:
                raise FerryError("AUTH_REQUIRED", "Server requires a token: pass --token-file or set FERRY_TOKEN")
            if len(m["nonce"]) != 32:
                raise FerryError("BAD_FRAME", "WELCOME sets AUTH without a 32-byte nonce")
            mac = hmac.new(token.encode("utf-8"), AUTH_CONTEXT + m["nonce"], hashlib.sha256).digest()
            self.send(encode({"kind": "auth", "mac": mac}))
            m = self.receive(self.opts.timeout, handshake_done=False)
            if m is None:
                raise FerryError("CONNECTION_FAILED", "No AUTH_OK within %.0f s" % self.opts.timeout)
            if m["kind"] != "auth_ok":
                raise FerryError("UNEXPECTED_FRAME", "Expected AUTH_OK, got %s" % m["kind"].upper())


# --- Local files ------------------------------------------------------------------

class LocalFile:
    def __init__(self, path, name):
        self.path = path
        self.name = unicodedata.normalize("NFC", name)
        self.mime = mimetypes.guess_type(self.name)[0] or ""
        self.status = None  # None = pending, else "ok" / "duplicate" / an error code
        self.message = ""
        self.stored_name = None
        self.describe()

    def describe(self):
        """Stats and hashes the file; the four values a resume is matched on come from here."""
        st = os.stat(self.path)
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                digest.update(block)
        after = os.stat(self.path)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise OSError("%s changed while being read" % self.path)
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.mtime_ms = max(0, st.st_mtime_ns // 1_000_000)
        self.sha256 = digest.digest()

    def changed(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns)


def expand(paths, prefix):
    """Files and folders to (path, name) pairs; folders keep their relative layout, symlinks inside are skipped."""
    out = []
    for p in paths:
        base = os.path.basename(os.path.normpath(os.path.abspath(p)))
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
                rel = os.path.relpath(root, p)
                for f in sorted(files):
                    full = os.path.join(root, f)
                    if os.path.islink(full) or not os.path.isfile(full):
                        continue
                    parts = [base] + ([] if rel == "." else rel.split(os.sep)) + [f]
                    out.append((full, prefix + "/".join(parts)))
        else:
            out.append((p, prefix + base))
    return out


# --- The sender ---------------------------------------------------------------------

class Sender:
    """One client: sends its files one at a time, then its messages, reconnecting and resuming on drops."""

    def __init__(self, host, port, opts, client=None, emit=None):
        self.host, self.port, self.opts = host, port, opts
        self.client = client
        self.emit = emit or (lambda event: None)
        self.reconnects = 0
        self.next_id = 0

    def event(self, **fields):
        if self.client is not None:
            fields["client"] = self.client
        self.emit(fields)

    def new_id(self):
        self.next_id = self.next_id % 0xFFFFFFFF + 1  # never 0 (section 8.2)
        return self.next_id

    def run(self, files, messages):
        """Delivers everything it can; returns (files, message results)."""
        msgs = [{"text": t, "status": None, "message": ""} for t in messages]
        attempt = 0
        while any(f.status is None for f in files) or any(m["status"] is None for m in msgs):
            conn = None
            try:
                conn = Connection(self.host, self.port, self.opts)
                conn.handshake(self.opts.token)
                self.next_id = 0
                self.event(type="connected", attempt=attempt)
                if self.session(conn, files, msgs):
                    attempt = 0
                    continue
                # Nothing finished: every pending file was FILE_BUSY. Wait, then offer again.
                attempt += 1
                if attempt > self.opts.retries:
                    for item in files:
                        if item.status is None:
                            self.fail_file(item, "FILE_BUSY", "Still being received on another connection")
                    continue
                time.sleep(self.backoff(attempt))
            except FerryError as e:
                if conn is not None and not e.remote and e.code in LOCAL_PROTOCOL_CODES:
                    # Section 4: a malformed frame is answered with ERROR id 0, then the connection closes.
                    try:
                        conn.send(encode({"kind": "error", "wireCode": ERROR_CODES[e.code], "id": 0,
                                          "message": str(e)[:200]}))
                    except FerryError:
                        pass
                if e.code in RECONNECT_CODES and attempt < self.opts.retries:
                    delay = self.backoff(attempt)
                    attempt += 1
                    self.reconnects += 1
                    self.event(type="reconnect", attempt=attempt, delayMs=round(delay * 1000), code=e.code,
                               reason=str(e))
                    time.sleep(delay)
                    continue
                if e.code in RECONNECT_CODES:
                    e = FerryError("CONNECTION_FAILED", "Cannot reach %s:%d after %d attempts: %s"
                                   % (self.host, self.port, attempt + 1, e), e.id, e.remote)
                for item in files:
                    if item.status is None:
                        self.fail_file(item, e.code, str(e))
                for m in msgs:
                    if m["status"] is None:
                        m["status"], m["message"] = e.code, str(e)
                        self.event(type="error", name="(message)", code=e.code, message=str(e))
            finally:
                if conn is not None:
                    conn.close()
        return files, msgs

    def backoff(self, attempt):
        """Section 12: a random delay between c/2 and c, c = min(max, base * 2^attempt)."""
        c = min(self.opts.backoff_max, self.opts.backoff_base * (2 ** min(attempt, 30)))
        return random.uniform(c / 2, c)

    def fail_file(self, item, code, message):
        item.status, item.message = code, message
        self.event(type="error", name=item.name, code=code, message=message)

    def session(self, conn, files, msgs):
        """Runs one connection; False if nothing could finish because every pending file was busy."""
        progressed = False
        busy = False
        for item in files:
            if item.status is not None:
                continue
            if item.changed():
                try:
                    item.describe()  # never splice old and new bytes: new values mean offset 0
                except OSError as e:
                    self.fail_file(item, "IO_ERROR", "Cannot read %s: %s" % (item.path, e))
                    progressed = True
                    continue
            if self.send_file(conn, item) == "busy":
                busy = True
            else:
                progressed = True
        if busy:
            return progressed
        if any(m["status"] is None for m in msgs) and not conn.server_caps & CAP_MESSAGES:
            for m in msgs:
                if m["status"] is None:
                    m["status"], m["message"] = "UNEXPECTED_FRAME", "Server does not take messages"
            return True
        for index, m in enumerate(msgs):
            if m["status"] is None:
                self.send_message(conn, index, m)
        return True

    def send_file(self, conn, item):
        file_id = self.new_id()
        conn.send(encode({"kind": "file", "id": file_id, "flags": FILE_FLAG_RESUME, "size": item.size,
                          "sha256": item.sha256, "mtimeMs": item.mtime_ms, "name": item.name,
                          "mime": item.mime}))
        answer = self.answer_for(conn, file_id)
        if answer["kind"] == "error":
            if answer["code"] == "FILE_BUSY":
                self.event(type="busy", name=item.name, message=answer["message"])
                return "busy"
            self.fail_file(item, answer["code"], answer["message"])
            return "failed"
        if answer["kind"] == "receipt":
            return self.check_receipt(item, answer, 0)
        offset = answer["offset"]
        if offset > item.size:
            raise FerryError("BAD_FRAME", "ACCEPT offset %d is past the end of %s" % (offset, item.name))
        self.event(type="file", name=item.name, size=item.size, offset=offset)
        try:
            refused = self.stream(conn, item, file_id, offset)
        except OSError as e:
            # Section 8.3: abandon the file with an ERROR naming its id; the server does not answer.
            conn.send(encode({"kind": "error", "wireCode": ERROR_CODES["IO_ERROR"], "id": file_id,
                              "message": "Sender cannot read the file"}))
            self.fail_file(item, "IO_ERROR", "Cannot read %s: %s" % (item.path, e))
            return "failed"
        if refused is not None:
            self.fail_file(item, refused["code"], refused["message"])
            return "failed"
        conn.send(encode({"kind": "end", "id": file_id}))
        answer = self.answer_for(conn, file_id)
        if answer["kind"] == "error":
            self.fail_file(item, answer["code"], answer["message"])
            return "failed"
        if answer["kind"] != "receipt":
            raise FerryError("UNEXPECTED_FRAME", "Expected RECEIPT for %s, got %s"
                             % (item.name, answer["kind"].upper()))
        return self.check_receipt(item, answer, offset)

    def answer_for(self, conn, wanted_id):
        while True:
            m = conn.expect()
            if m["kind"] in ("accept", "receipt", "error", "message_ack") and m["id"] == wanted_id:
                return m
            if m["kind"] not in ("accept", "receipt", "error", "message_ack"):
                raise FerryError("UNEXPECTED_FRAME", "Unexpected %s from the server" % m["kind"].upper())
            # An answer for an id no longer in flight: nothing to do.

    def stream(self, conn, item, file_id, offset):
        """Sends DATA from `offset` to the end; returns the ERROR if the server refused mid-way."""
        chunk = max(1, min(self.opts.chunk_size, conn.server_max - 12))
        with open(item.path, "rb") as f:
            f.seek(offset)
            position = offset
            while position < item.size:
                block = f.read(min(chunk, item.size - position))
                if not block:
                    raise OSError("%s shrank while being sent" % item.path)
                conn.send(data_header(file_id, position, len(block)) + block)
                position += len(block)
                # Between chunks: answer PINGs, and stop early if the server refused this file.
                m = conn.receive(0)
                while m is not None:
                    if m["kind"] == "error" and m["id"] == file_id:
                        return m
                    m = conn.receive(0)
                if self.opts.throttle:
                    time.sleep(self.opts.throttle)
        return None

    def check_receipt(self, item, receipt, resumed_from):
        if receipt["sha256"] != item.sha256 or receipt["size"] != item.size:
            self.fail_file(item, "HASH_MISMATCH", "Receipt for %s says sha256 %s, size %d; the local file has %s, %d"
                           % (item.name, receipt["sha256"].hex(), receipt["size"], item.sha256.hex(), item.size))
            return "failed"
        item.status = "duplicate" if receipt["flags"] & RECEIPT_FLAG_DUPLICATE else "ok"
        item.stored_name = receipt["storedName"]
        self.event(type="done", name=item.name, storedName=item.stored_name, size=receipt["size"],
                   sha256=receipt["sha256"].hex(), duplicate=item.status == "duplicate", resumedFrom=resumed_from)
        return "done"

    def send_message(self, conn, index, m):
        raw = m["text"].encode("utf-8")
        if 4 + len(raw) > conn.server_max:
            m["status"], m["message"] = "MESSAGE_TOO_LARGE", "Message of %d bytes does not fit a frame" % len(raw)
            self.event(type="error", name="(message)", code=m["status"], message=m["message"])
            return
        msg_id = self.new_id()
        conn.send(frame(MESSAGE, struct.pack(">I", msg_id) + raw))
        answer = self.answer_for(conn, msg_id)
        if answer["kind"] == "message_ack":
            m["status"] = "ok"
            self.event(type="message", index=index)
        elif answer["kind"] == "error":
            m["status"], m["message"] = answer["code"], answer["message"]
            self.event(type="error", name="(message)", code=answer["code"], message=answer["message"])
        else:
            raise FerryError("UNEXPECTED_FRAME", "Expected MESSAGE_ACK, got %s" % answer["kind"].upper())


def worst_exit(exits):
    """The exit code that matters most: integrity (5), internal (1), connection (3), refused (4), usage (2)."""
    for e in (EXIT_INTEGRITY, EXIT_INTERNAL, EXIT_CONNECTION, EXIT_REFUSED, EXIT_USAGE):
        if e in exits:
            return e
    return EXIT_OK


def outcome_exit(files, msgs):
    codes = [f.status for f in files if f.status not in ("ok", "duplicate")]
    codes += [m["status"] for m in msgs if m["status"] != "ok"]
    return worst_exit({exit_code_for(c) for c in codes})


# --- Self-test against docs/vectors.json --------------------------------------------

def from_vector(m):
    """A vectors.json `message` to the dict `encode` takes."""
    out = dict(m)
    for k in ("nonce", "mac", "sha256", "bytes"):
        if k in out:
            out[k] = bytes.fromhex(out[k])
    if "token" in out:
        out["token"] = int(out["token"])
    return out


def to_vector(m):
    out = dict(m)
    for k in ("nonce", "mac", "sha256", "bytes"):
        if k in out:
            out[k] = out[k].hex()
    if "token" in out:
        out["token"] = str(out["token"])
    return out


def decode_stream(data, max_frame):
    """Decodes a whole byte stream then signals its end; returns (frames decoded, error code or None)."""
    d = FrameDecoder(max_frame)
    d.push(data)
    count = 0
    try:
        while True:
            got = d.next()
            if got is None:
                break
            decode(*got)
            count += 1
        d.end()
    except FerryError as e:
        return count, e.code
    return count, None


def self_test(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    failures = []
    for v in doc["vectors"]:
        expected = bytes.fromhex(v["hex"])
        try:
            encoded = encode(from_vector(v["message"]))
            if encoded != expected:
                failures.append("%s: encodes to %s, expected %s" % (v["name"], encoded.hex(), v["hex"]))
            d = FrameDecoder(doc.get("defaultMaxFrameSize", DEFAULT_MAX_FRAME))
            d.push(expected)
            got = d.next()
            decoded = to_vector(decode(*got)) if got else None
            if decoded != v["message"] or d.buf:
                failures.append("%s: decodes to %r, expected %r" % (v["name"], decoded, v["message"]))
        except (FerryError, ValueError, struct.error) as e:
            failures.append("%s: %s" % (v["name"], e))
    for v in doc.get("invalid", []):
        count, code = decode_stream(bytes.fromhex(v["hex"]), v["maxFrameSize"])
        if count != v["validFramesBefore"] or code != v["error"]:
            failures.append("invalid %s: %d frames then %s, expected %d then %s"
                            % (v["name"], count, code, v["validFramesBefore"], v["error"]))
        elif ERROR_CODES[code] != v["errorNumber"]:
            failures.append("invalid %s: %s is %d here, %d in the vectors"
                            % (v["name"], code, ERROR_CODES[code], v["errorNumber"]))
    for a in doc.get("auth_examples", []):
        key = a["token"].encode("utf-8")
        data = AUTH_CONTEXT + bytes.fromhex(a["nonce"])
        if key.hex() != a["tokenUtf8"] or data.hex() != a["hmacInput"] or \
                hmac.new(key, data, hashlib.sha256).hexdigest() != a["mac"]:
            failures.append("auth example %s: mac differs" % a["name"])
    session = doc.get("example_session", [])
    for step in session:
        count, code = decode_stream(bytes.fromhex(step["hex"]), DEFAULT_MAX_FRAME)
        if count != 1 or code is not None:
            failures.append("example session step %s does not decode" % step.get("vector"))
    for line in failures:
        print("self-test FAILED: " + line, file=sys.stderr)
    print("self-test: %d vectors, %d invalid streams, %d auth examples, %d session frames: %s"
          % (len(doc["vectors"]), len(doc.get("invalid", [])), len(doc.get("auth_examples", [])), len(session),
             "FAILED" if failures else "ok"))
    return EXIT_INTERNAL if failures else EXIT_OK


# --- Command line ---------------------------------------------------------------------

def parse_size(text):
    units = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    t = text.strip().upper().rstrip("B").rstrip("I")
    unit = t[-1] if t and t[-1] in "KMG" else ""
    try:
        value = int(float(t[:-1] if unit else t) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a size like 256K or 1M" % text)
    if value < 1:
        raise argparse.ArgumentTypeError("size must be at least 1 byte")
    return value


def parse_target(text):
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "9000"
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        raise ValueError("write IPv6 addresses in brackets, e.g. [::1]:9000")
    else:
        host, port = text, "9000"
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port in 1..65535")
    return host, int(port)


def build_parser():
    p = argparse.ArgumentParser(
        prog="ferry_send.py",
        description="Send files, folders and text messages to a ferry server (protocol version 1).",
        epilog="Exit codes: 0 delivered and verified, 1 internal error, 2 usage, 3 connection failure, "
               "4 refused by the server, 5 integrity failure.")
    p.add_argument("items", nargs="*", metavar="FILE|FOLDER... HOST:PORT")
    p.add_argument("-m", "--message", action="append", default=[], help="send a text message (repeatable)")
    p.add_argument("--token-file", help="file holding the shared token (or set FERRY_TOKEN)")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--ca", help="trust this CA certificate (PEM); implies --tls")
    p.add_argument("--clients", type=int, default=1, help="simulate N concurrent clients, names prefixed c<i>-")
    p.add_argument("--retries", type=int, default=8, help="reconnect attempts after a drop (default 8)")
    p.add_argument("--chunk-size", type=parse_size, default=256 * 1024, help="bytes per DATA frame (default 256K)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to connect and handshake (default 10)")
    p.add_argument("--heartbeat", type=float, default=5.0, help="PING after this many idle seconds (default 5)")
    p.add_argument("--dead-after", type=float, default=15.0,
                   help="seconds of silence before the server is declared dead (default 15)")
    p.add_argument("--backoff-base", type=float, default=0.25, help="first reconnect delay in s (default 0.25)")
    p.add_argument("--backoff-max", type=float, default=10.0, help="longest reconnect delay in s (default 10)")
    p.add_argument("--throttle", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: pause per chunk
    p.add_argument("--json", action="store_true", help="print one JSON event per line on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("--self-test", action="store_true", help="check this client against docs/vectors.json")
    p.add_argument("--vectors", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                     "docs", "vectors.json"), help=argparse.SUPPRESS)
    return p


def main(argv):
    parser = build_parser()
    try:
        opts = parser.parse_intermixed_args(argv)
    except SystemExit as e:
        return EXIT_OK if e.code == 0 else EXIT_USAGE
    if opts.self_test:
        return self_test(opts.vectors)

    def usage(text):
        print("ferry_send.py: %s\nRun with --help for usage." % text, file=sys.stderr)
        return EXIT_USAGE

    if not opts.items:
        return usage("missing HOST:PORT")
    try:
        host, port = parse_target(opts.items[-1])
    except ValueError as e:
        return usage("cannot parse target %r: %s" % (opts.items[-1], e))
    paths = opts.items[:-1]
    if not paths and not opts.message:
        return usage("nothing to send: give files, folders or --message")
    if opts.clients < 1 or opts.retries < 0 or opts.timeout <= 0 or opts.dead_after <= 0 or opts.heartbeat <= 0:
        return usage("--clients must be ≥ 1, --retries ≥ 0, timeouts > 0")
    opts.tls = opts.tls or opts.ca is not None
    for path in paths:
        if not os.path.exists(path):
            return usage("cannot read %s: no such file or folder" % path)
    if opts.token_file is not None:
        try:
            with open(opts.token_file, encoding="utf-8") as f:
                opts.token = f.read().strip()
        except OSError as e:
            return usage("cannot read token file %s: %s" % (opts.token_file, e.strerror))
        if not opts.token:
            return usage("token file %s is empty" % opts.token_file)
    else:
        opts.token = os.environ.get("FERRY_TOKEN") or None

    lock = threading.Lock()

    def emit(event):
        with lock:
            if opts.json:
                print(json.dumps(event, ensure_ascii=False), flush=True)
                return
            prefix = "client %d: " % event["client"] if "client" in event else ""
            t = event["type"]
            if t == "done" and not opts.quiet:
                print("%s%s %s as %s (%d bytes, sha256 %s)%s" % (
                    prefix, "already had" if event["duplicate"] else "stored", event["name"], event["storedName"],
                    event["size"], event["sha256"],
                    ", resumed at %d" % event["resumedFrom"] if event["resumedFrom"] else ""), flush=True)
            elif t == "message" and not opts.quiet:
                print("%smessage %d delivered" % (prefix, event["index"] + 1), flush=True)
            elif t == "reconnect" and not opts.quiet:
                print("%sconnection lost (%s), retry %d in %d ms" % (prefix, event["reason"], event["attempt"],
                                                                    event["delayMs"]), file=sys.stderr, flush=True)
            elif t == "error":
                print("%sFAILED %s: %s: %s" % (prefix, event["name"], event["code"], event["message"]),
                      file=sys.stderr, flush=True)

    results = [None] * opts.clients

    def run_client(i):
        prefix = "c%d-" % i if opts.clients > 1 else ""
        try:
            files = [LocalFile(path, name) for path, name in expand(paths, prefix)]
        except OSError as e:
            results[i] = ([], [], EXIT_USAGE, 0, str(e))
            return
        sender = Sender(host, port, opts, client=i if opts.clients > 1 else None, emit=emit)
        try:
            files, msgs = sender.run(files, list(opts.message))
            results[i] = (files, msgs, outcome_exit(files, msgs), sender.reconnects, None)
        except Exception as e:  # a bug here must not hang the other clients
            results[i] = ([], [], EXIT_INTERNAL, sender.reconnects, "%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=run_client, args=(i,), daemon=True) for i in range(opts.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    exits = set()
    for i, (files, msgs, code, reconnects, crash) in enumerate(results):
        if crash:
            print("client %d: %s" % (i, crash), file=sys.stderr)
        summary = {"type": "summary", "files": len(files),
                   "delivered": sum(f.status in ("ok", "duplicate") for f in files),
                   "messages": len(msgs), "acked": sum(m["status"] == "ok" for m in msgs),
                   "reconnects": reconnects, "exit": code}
        if opts.clients > 1:
            summary["client"] = i
        if opts.json:
            print(json.dumps(summary), flush=True)
        elif opts.clients > 1 or not opts.quiet:
            print("%s%d/%d files, %d/%d messages delivered, %d reconnects, exit %d" % (
                "client %d: " % i if opts.clients > 1 else "", summary["delivered"], summary["files"],
                summary["acked"], summary["messages"], reconnects, code), flush=True)
        exits.add(code)
    return worst_exit(exits)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
