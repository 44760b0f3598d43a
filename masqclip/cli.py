"""The ``masqclip`` command line.

Each sub-command lives in its own module under ``masqclip/commands/`` that defines ``COMMAND``
(its name), ``HELP`` (one line), ``add_arguments(parser)`` and ``main(args) -> int``. Heavy imports
(torch, open_clip, mlflow) belong inside ``main`` so ``masqclip --help`` stays instant.

A ``masqclip.errors.UserError`` raised by a command (missing or unreadable file, refused checkpoint,
unknown dataset, bad config value, ...) is printed as one line, ``masqclip: error: ...``, with exit
status 2; ``masqclip --debug COMMAND ...`` also prints its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

from . import __version__, commands


def iter_plugin_modules(package):
    """Import and yield every public module of ``package`` (sorted by name)."""
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{package.__name__}.{info.name}")


def add_plugin_subparsers(parser: argparse.ArgumentParser, package, dest: str, metavar: str) -> None:
    """One sub-parser per module of ``package``; modules define COMMAND, HELP, add_arguments, main."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar)
    for module in iter_plugin_modules(package):
        p = sub.add_parser(module.COMMAND, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masqclip",
        description="MasQCLIP: open-vocabulary universal image segmentation, as reproducible pipeline steps.",
    )
    parser.add_argument("--version", action="version", version=f"masqclip {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error caused by the input (default: one line)")
    add_plugin_subparsers(parser, commands, dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    from .errors import EXIT_USER_ERROR, UserError, one_line

    try:
        return int(args._main(args) or 0)
    except UserError as err:
        if args.debug:
            traceback.print_exc()
        print(f"masqclip: error: {one_line(str(err), limit=2000)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
