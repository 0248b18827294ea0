"""The ``hfcompress`` command line.

Each command group lives in its own module of this package and exposes
``register(subparsers)``; it adds its sub-command(s) with ``set_defaults(func=handler)``
where ``handler(args) -> int``. Errors derived from :class:`hfcompress.errors.HFCompressError`
are printed as one line (``error: ...``) with their exit code; ``--debug`` also shows the
traceback. A pydantic ``ValidationError`` about a value that came from a flag (``--samples 0``)
is a usage error naming the flag (exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..integrations import quiet_progress

#: Command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("compress", "prune", "quantize", "distill", "evaluate", "search", "hub", "card", "assets")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line plus a hint (exit 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        from ..secrets import redact

        self.exit(2, f"error: {redact(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="hfcompress",
        description="Compress Hugging Face models (prune, quantize, distill), evaluate them, "
        "and push / pull them to and from the Hub.",
    )
    parser.add_argument("--version", action="version", version=f"hfcompress {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HFCOMPRESS_DEBUG") == "1"
    _register_argv_secrets(argv)
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        if getattr(args, "no_progress", False):  # the one progress convention: library bars too
            quiet_progress()
        if getattr(args, "trust_remote_code", False):
            print("warning: trust_remote_code is ON: code from the model repo will run", file=sys.stderr)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        from ..errors import HFCompressError
        from ..secrets import redact

        if debug:
            import traceback

            print(redact(traceback.format_exc()), file=sys.stderr)
        if isinstance(exc, HFCompressError):
            print(f"error: {redact(str(exc))}", file=sys.stderr)
            return exc.exit_code
        flag_error = _flag_error(exc, args)
        if flag_error:
            print(f"error: {redact(flag_error)}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError) and exc.errno == 28:
            print("error: no space left on device: free disk space or choose another --output", file=sys.stderr)
            return 1
        one_line = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"error: unexpected failure: {redact(one_line)} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1


#: Config fields whose flag is not ``--<field with dashes>``.
_FIELD_FLAGS = {"dataset": "--calibration", "config": "--calibration-config", "split": "--calibration-split"}


def _flag_error(exc: BaseException, args: argparse.Namespace | None) -> str | None:
    """One line for a pydantic ``ValidationError`` on a value given by a flag; None otherwise."""
    errors = getattr(exc, "errors", None)
    if args is None or type(exc).__name__ != "ValidationError" or not callable(errors):
        return None
    err = errors()[0]
    field = next((str(x) for x in reversed(err.get("loc", ())) if isinstance(x, str)), None)
    if field is None or not hasattr(args, field):
        return None
    flag = _FIELD_FLAGS.get(field, "--" + field.replace("_", "-"))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    return f"{flag} {getattr(args, field)!r}: {msg} (see `hfcompress {args.command} --help`)"


def _register_argv_secrets(argv: list[str]) -> None:
    """Tokens given on the command line (``--token T``, ``--token=T``, ``hub serve --token U:T:ORGS``)
    are redacted from everything printed, even if an error happens before they are used."""
    from ..secrets import register_secret

    for i, arg in enumerate(argv):
        value = None
        if arg == "--token" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--token="):
            value = arg.split("=", 1)[1]
        if value:
            register_secret(value)
            parts = value.split(":")
            if len(parts) in (2, 3):  # USER:TOKEN[:ORGS]
                register_secret(parts[1])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
