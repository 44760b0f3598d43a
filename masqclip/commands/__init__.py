"""Sub-commands of the ``masqclip`` CLI, one module each (see ``masqclip/cli.py``)."""
