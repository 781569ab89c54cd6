"""Loopback forwarder: makes the API server (on 127.0.0.1:PORT in the root namespace) reachable
as 127.0.0.1:PORT from inside lab node namespaces, as it is for a hostNetwork pod.

A socket belongs to the network namespace of the thread that created it, so this one process
enters each node namespace just long enough to create a listening socket there, then serves
all of them with asyncio, connecting upstream from the root namespace. Traffic stays on
loopback interfaces. Run: ``python -m metalxdp.rig.forward --port 6443 --netns mxab12-node1 ...``
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import socket

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket created inside ``/run/netns/<netns>``."""
    s = socket_in_netns(netns)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def socket_in_netns(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """An unconnected TCP socket that belongs to ``/run/netns/<netns>``."""
    root = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setblocking(False)
            return s
        finally:
            _setns(root)
    finally:
        os.close(root)
        os.close(target)


async def serve_into(port: int, netns: str, upstream_host: str, upstream_port: int) -> None:
    """The other direction: listen on 127.0.0.1:PORT here (the root namespace) and connect to
    UPSTREAM_HOST:UPSTREAM_PORT from inside ``netns`` (an API server living in a lab namespace,
    reached from the host with the same kubeconfig as ever)."""
    loop = asyncio.get_running_loop()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        s = socket_in_netns(netns)
        try:
            await loop.sock_connect(s, (upstream_host, upstream_port))
            ur, uw = await asyncio.open_connection(sock=s)
        except OSError:
            s.close()
            w.close()
            return
        await asyncio.gather(_pipe(r, uw), _pipe(ur, w))

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    print(f"forwarding 127.0.0.1:{port} to {upstream_host}:{upstream_port} in {netns}", flush=True)
    await server.serve_forever()


async def serve(port: int, namespaces: list[str], upstream_port: int, also: tuple[str, ...] = ()) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            w.close()
            return
        await asyncio.gather(_pipe(r, uw), _pipe(ur, w))

    servers = [await asyncio.start_server(handle, sock=listen_in_netns(ns, host, port))
               for ns in namespaces for host in ("127.0.0.1", *also)]
    print(f"forwarding 127.0.0.1:{port} in {len(servers)} namespaces to 127.0.0.1:{upstream_port}",
          flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="port to listen on in each namespace")
    ap.add_argument("--upstream-port", type=int, help="root-namespace port (default: --port)")
    ap.add_argument("--netns", action="append", default=[], help="namespace name (repeat)")
    ap.add_argument("--into-netns", metavar="NS",
                    help="reverse mode: listen on 127.0.0.1 here, connect to --upstream-host inside NS")
    ap.add_argument("--upstream-host", default="127.0.0.1", help="with --into-netns: the address to reach")
    ap.add_argument("--also-listen", action="append", default=[], metavar="ADDR",
                    help="also listen on ADDR (already on an interface of each namespace): the API "
                         "server's advertised address, so pods reach it through the kubernetes Service")
    a = ap.parse_args()
    if a.into_netns:
        asyncio.run(serve_into(a.port, a.into_netns, a.upstream_host, a.upstream_port or a.port))
    elif a.netns:
        asyncio.run(serve(a.port, a.netns, a.upstream_port or a.port, tuple(a.also_listen)))
    else:
        ap.error("--netns (repeat) or --into-netns")


if __name__ == "__main__":
    main()
