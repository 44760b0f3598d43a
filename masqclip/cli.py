"""The ``masqclip`` command line.

Each sub-command lives in its own module under ``masqclip/commands/`` that defines ``COMMAND``
(its name), ``HELP`` (one line), ``add_arguments(parser)`` and ``main(args) -> int``. Heavy imports
(torch, open_clip, mlflow) belong inside ``main`` so ``masqclip --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masqclip",
        description="MasQCLIP: open-vocabulary universal image segmentation, as reproducible pipeline steps.",
    )
    parser.add_argument("--version", action="version", version=f"masqclip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.COMMAND, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    from .config import ConfigError

    try:
        return int(args._main(args) or 0)
    except ConfigError as err:
        print(f"masqclip {args.command}: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
