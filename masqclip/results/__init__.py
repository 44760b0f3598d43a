"""Result tables and plots (``masqclip results ...``), drawn from the pipeline's manifest
(``masqclip.manifest``). Imports nothing of ``masqclip.pipeline``."""
from .tables import Table, build_table, build_tables, combine_seeds, load_metrics, write_tables

__all__ = ["Table", "build_table", "build_tables", "combine_seeds", "load_metrics", "write_tables"]
