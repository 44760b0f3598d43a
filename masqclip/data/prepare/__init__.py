"""Dataset preparation steps, one module each, exposed as ``masqclip prepare <name>``.

A module here defines ``COMMAND`` (e.g. ``"synthetic"``, ``"coco-ovsplit"``), ``HELP``,
``add_arguments(parser)`` and ``main(args) -> int``; it is discovered automatically.
"""
