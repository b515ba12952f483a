"""`pods/exec` over WebSocket, the channel protocols of kubectl 1.30+ (`v5.channel.k8s.io`) and
of the Python client (`v4.channel.k8s.io`): every binary message starts with its channel byte
(0 stdin, 1 stdout, 2 stderr, 3 error = the final Status, 4 resize); v5 adds 255 = "close this
channel" (kubectl sends it when its stdin ends). The command runs in the pod's network namespace
(`ip netns exec`, as the cluster client's exec), with a pseudo-terminal when `tty=true`.
"""
from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import json
import os
import struct
import termios

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_token(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def choose_protocol(offered: str) -> str | None:
    wanted = [p.strip() for p in offered.split(",") if p.strip()]
    for protocol in PROTOCOLS:
        if protocol in wanted:
            return protocol
    return None


def exit_status(code: int) -> dict:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


class ExecSession:
    """One exec: a WebSocket on (reader, writer) after the 101, and the process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 protocol: str, leftover: bytes):
        self.reader, self.writer = reader, writer
        self.protocol = protocol
        self.ws = Connection(ConnectionType.SERVER)
        self.leftover = leftover
        self._partial = bytearray()

    def _send(self, channel: int, data: bytes) -> None:
        self.writer.write(self.ws.send(Message(data=bytes([channel]) + data)))

    async def run(self, argv: list[str], prefix: list[str], stdin: bool, tty: bool) -> None:
        """Run `prefix + argv` (volumes.exec_prefix: the container's namespaces)."""
        command = [*prefix, *argv]
        master = slave = None
        try:
            if tty:
                master, slave = os.openpty()
                proc = await asyncio.create_subprocess_exec(
                    *command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                    preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
                os.close(slave)
                slave = None
            else:
                proc = await asyncio.create_subprocess_exec(
                    *command, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    start_new_session=True)
        except OSError as exc:
            self._send(ERROR, json.dumps({"metadata": {}, "status": "Failure", "reason":
                                          "InternalError", "message": str(exc)}).encode())
            await self._close()
            return
        pumps = []
        if tty:
            pumps.append(asyncio.ensure_future(self._pump_pty(master)))
        else:
            pumps.append(asyncio.ensure_future(self._pump(proc.stdout, STDOUT)))
            pumps.append(asyncio.ensure_future(self._pump(proc.stderr, STDERR)))
        reader_task = asyncio.ensure_future(self._read_client(proc, master, stdin))
        try:
            code = await proc.wait()
            await asyncio.wait(pumps, timeout=2)
        finally:
            reader_task.cancel()
            for p in pumps:
                p.cancel()
            if proc.returncode is None:
                proc.kill()
            if master is not None:
                os.close(master)
            if slave is not None:
                os.close(slave)
        self._send(ERROR, json.dumps(exit_status(code if code >= 0 else 128 - code)).encode())
        await self._close()

    async def _close(self) -> None:
        try:
            self.writer.write(self.ws.send(CloseConnection(code=1000)))
            await self.writer.drain()
        except (ConnectionError, Exception):
            pass

    async def _pump(self, stream: asyncio.StreamReader, channel: int) -> None:
        while True:
            data = await stream.read(65536)
            if not data:
                return
            self._send(channel, data)
            await self.writer.drain()

    async def _pump_pty(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            queue.put_nowait(data)
            if not data:
                loop.remove_reader(master)
        loop.add_reader(master, readable)
        try:
            while True:
                data = await queue.get()
                if not data:
                    return
                self._send(STDOUT, data)
                await self.writer.drain()
        finally:
            try:
                loop.remove_reader(master)
            except (ValueError, OSError):
                pass

    async def _read_client(self, proc, master: int | None, stdin: bool) -> None:
        if self.leftover:
            self.ws.receive_data(self.leftover)
        while True:
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.writer.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if proc.returncode is None:
                        proc.kill()
                    return
                elif isinstance(event, (BytesMessage, TextMessage)):
                    data = event.data if isinstance(event.data, bytes) else event.data.encode()
                    self._partial += data
                    if event.message_finished:
                        await self._on_message(bytes(self._partial), proc, master, stdin)
                        self._partial.clear()
            data = await self.reader.read(65536)
            if not data:
                if proc.returncode is None:
                    proc.kill()
                return
            self.ws.receive_data(data)

    async def _on_message(self, message: bytes, proc, master: int | None, stdin: bool) -> None:
        if not message:
            return
        channel, payload = message[0], message[1:]
        if channel == STDIN and stdin:
            if master is not None:
                os.write(master, payload)
            elif proc.stdin is not None and payload:
                proc.stdin.write(payload)
                await proc.stdin.drain()
        elif channel == RESIZE and master is not None:
            try:
                size = json.loads(payload)
                fcntl.ioctl(master, termios.TIOCSWINSZ,
                            struct.pack("HHHH", int(size.get("Height", 24)),
                                        int(size.get("Width", 80)), 0, 0))
            except (ValueError, OSError, TypeError):
                pass
        elif channel == CLOSE and payload[:1] == bytes([STDIN]):
            if master is not None:
                os.write(master, b"\x04")
            elif proc.stdin is not None:
                proc.stdin.close()
