"""The job plan of the Snakemake workflow: which models (per seed), evaluations, tables and plots a
pipeline config asks for, and the manifest (``masqclip.manifest``) that the tables and plots read.
Imports nothing of ``masqclip.results``."""
from .plan import Evaluation, Plan, Stage, file_sha256, flags, format_opts, signature

__all__ = ["Evaluation", "Plan", "Stage", "file_sha256", "flags", "format_opts", "signature"]
