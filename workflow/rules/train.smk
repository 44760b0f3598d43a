# Teacher (round 0), student rounds 1..K (round k's teacher is round k-1's student) and
# MasQ-Tuning, per setting. Folders carry a signature of everything that decides the weights
# (masqclip/results/plan.py), so a changed stage config trains into a new folder and only its
# dependants re-run. Every job passes --resume: a killed or preempted job continues from its last
# checkpoint. Multi-GPU jobs run under torchrun (see `launcher` in common.smk).
# These rules are eligible for Snakemake's between-workflow cache (`--cache` with
# SNAKEMAKE_OUTPUT_CACHE set), which Snakemake refuses together with `benchmark:`; their timing is in
# train_metrics.json and the log instead.

rule train_teacher:
    input:
        config=lambda wc: stage_of(wc, "teacher").config,
        data=lambda wc: stage_of(wc, "teacher").inputs,
    output:
        **train_outputs(f"{R}/models/{{setting}}/teacher-{{sig}}"),
    params:
        launcher=launcher,
        outdir=output_dir,
        opts=lambda wc: stage_of(wc, "teacher").command_opts(),
    log:
        f"{R}/logs/train/{{setting}}/teacher-{{sig}}.log",
    resources:
        **res("teacher"),
    cache: "omit-software"
    conda:
        CONDA_ENV

    shell:
        "{params.launcher} train --config-file {input.config} --resume --tag setting={wildcards.setting} --tag stage=teacher --tag round=0 OUTPUT_DIR {params.outdir} {params.opts} > {log} 2>&1"


rule train_student:
    input:
        config=lambda wc: stage_of(wc, "student").config,
        data=lambda wc: stage_of(wc, "student").inputs,
    output:
        **train_outputs(f"{R}/models/{{setting}}/student{{round}}-{{sig}}"),
    params:
        launcher=launcher,
        outdir=output_dir,
        opts=lambda wc: stage_of(wc, "student").command_opts(),
    log:
        f"{R}/logs/train/{{setting}}/student{{round}}-{{sig}}.log",
    resources:
        **res("student"),
    cache: "omit-software"
    conda:
        CONDA_ENV

    shell:
        "{params.launcher} train --config-file {input.config} --resume --tag setting={wildcards.setting} --tag stage=student --tag round={wildcards.round} OUTPUT_DIR {params.outdir} {params.opts} > {log} 2>&1"


rule train_tuning:
    input:
        config=lambda wc: stage_of(wc, "tuning").config,
        data=lambda wc: stage_of(wc, "tuning").inputs,
    output:
        **train_outputs(f"{R}/models/{{setting}}/masqclip-r{{round}}-{{sig}}"),
    params:
        launcher=launcher,
        outdir=output_dir,
        opts=lambda wc: stage_of(wc, "tuning").command_opts(),
    log:
        f"{R}/logs/train/{{setting}}/masqclip-r{{round}}-{{sig}}.log",
    resources:
        **res("tuning"),
    cache: "omit-software"
    conda:
        CONDA_ENV

    shell:
        "{params.launcher} train --config-file {input.config} --resume --tag setting={wildcards.setting} --tag stage=masq-tuning --tag round={wildcards.round} OUTPUT_DIR {params.outdir} {params.opts} > {log} 2>&1"
