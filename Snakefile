# MasQCLIP pipeline: datasets -> (small CLIP) -> teacher -> student rounds -> MasQ-Tuning ->
# evaluation -> tables, plots, report. Default config = a miniature of the paper on a synthetic
# world (CPU, minutes); `--configfile config/paper.yaml` = the real reproduction. See config/README.md.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default; a --configfile (e.g. config/paper.yaml) replaces it instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/clip.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,


rule all:
    input:
        final_targets(),
        FRONT_PAGE,
    default_target: True
