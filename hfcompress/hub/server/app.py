"""Entry point: options, server construction and the serve loop (``hub serve``)."""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
import sys
import threading
from pathlib import Path

from .auth import parse_token_spec
from .faults import Faults
from .routes import FAULTS_PATH, HubServer, ServerConfig
from .store import Store


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``hub serve`` (shared by the CLI and ``python -m hfcompress.hub.server``)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; keep it loopback)")
    p.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    p.add_argument("--data", required=True, help="storage folder (created if missing; persists across restarts)")
    p.add_argument("--token", action="append", default=[], type=parse_token_spec, metavar="USER:TOKEN[:ORG,...]",
                   help="a user, its token and its orgs (repeatable)")
    p.add_argument("--token-file", help="file with one USER:TOKEN[:ORG,ORG...] per line (keeps tokens out of ps)")
    p.add_argument("--lfs-threshold", type=int, default=None, metavar="BYTES",
                   help="answer uploadMode 'lfs' for LFS-type files of at least BYTES (only for clients run with "
                        "HF_HUB_DISABLE_XET=1; default: always 'regular')")
    p.add_argument("--fail-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: answer the Nth request(s) (1-based) with --fail-status")
    p.add_argument("--fail-status", type=int, default=503, help="status for --fail-nth (default 503)")
    p.add_argument("--drop-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: close the connection of the Nth request(s) without an answer")
    p.add_argument("--cut-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: answer the Nth request(s) but cut the connection half-way "
                        "through the body (an interrupted download)")
    p.add_argument("--delay-nth", default="", metavar="N[,M-K...]",
                   help="fault injection: delay the Nth request(s) by --delay-ms (default: every request)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="fault injection: delay before answering")
    p.add_argument("--fault-match", default=None, metavar="REGEX",
                   help="number (and fault) only the requests whose 'METHOD /path' matches REGEX")
    p.add_argument("--fault-control", action="store_true",
                   help=f"tests only: accept GET/POST {FAULTS_PATH} to read / replace the fault settings")
    p.add_argument("--stall-ms", type=float, default=0.0,
                   help="fault injection: sleep this long per MiB of request/response body")
    p.add_argument("--idle-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="close a connection that sends or accepts nothing for SECONDS (default 120)")


def make_server(args: argparse.Namespace) -> HubServer:
    users = list(args.token)
    if args.token_file:
        users += [parse_token_spec(line.strip()) for line in Path(args.token_file).read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    try:
        faults = Faults.from_dict({"match": args.fault_match, "fail_nth": args.fail_nth,
                                   "fail_status": args.fail_status, "drop_nth": args.drop_nth,
                                   "cut_nth": args.cut_nth, "delay_nth": args.delay_nth,
                                   "delay_ms": args.delay_ms})
    except (ValueError, re.error) as exc:
        raise SystemExit(f"error: {exc}") from None
    idle = getattr(args, "idle_timeout", 120.0)
    if not idle > 0:
        raise SystemExit(f"error: --idle-timeout must be a positive number of seconds, got {idle}")
    config = ServerConfig(users=users, lfs_threshold=args.lfs_threshold, faults=faults,
                          fault_control=args.fault_control, stall_s=args.stall_ms / 1000.0, idle_timeout_s=idle)
    store = Store(Path(args.data))
    store.collect_garbage()  # blobs of a commit a crash interrupted, of repos deleted before
    return HubServer((args.host, args.port), store, config)


def is_loopback(host: str) -> bool:
    """Whether a bound address is a loopback one (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def serve(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM / SIGINT; the first stdout line is the URL."""
    server = make_server(args)
    host, port = server.server_address[:2]
    if not is_loopback(host):
        print(f"warning: the hub server listens on {host}:{port}: it is reachable from the network, and its "
              "tokens and private repos travel unencrypted (plain HTTP); use --host 127.0.0.1 unless you mean it",
              file=sys.stderr, flush=True)
    print(f"http://{host}:{port}", flush=True)

    def _stop(signum, frame):  # noqa: ARG001
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hfcompress.hub.server",
                                description="A Hub-compatible HTTP server for loopback use.")
    add_arguments(p)
    return serve(p.parse_args(argv))
