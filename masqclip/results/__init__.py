"""Result tables, plots and the job plan of the Snakemake workflow (``masqclip results ...``)."""
from .plan import Plan, Stage, Evaluation
from .tables import Table, build_tables, load_metrics, planned_tables, write_tables
from .plots import planned_plots

__all__ = ["Evaluation", "Plan", "Stage", "Table", "build_tables", "load_metrics", "planned_plots",
           "planned_tables", "write_tables"]
