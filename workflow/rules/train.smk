# Teacher (round 0), student rounds 1..K (round k's teacher is round k-1's student) and
# MasQ-Tuning, per setting and seed. Folders carry the seed and a signature of everything that
# decides the weights (masqclip/pipeline/plan.py), so a changed stage config trains into a new
# folder and only its dependants re-run. A stage given `weights` in the config is never trained:
# its file is used where it lies. Every job passes --resume: a killed or preempted job continues
# from its last checkpoint (after a preemption too: the SLURM profile requeues). Multi-GPU jobs run
# under torchrun, multi-node jobs one torchrun per node under srun (see `launch_command` in common.smk).
# These rules are eligible for Snakemake's between-workflow cache (`--cache` with
# SNAKEMAKE_OUTPUT_CACHE set), which Snakemake refuses together with `benchmark:`; their timing is in
# train_metrics.json and the log instead.

# rule name: (plan stage = folder prefix = MLflow stage tag = resources entry, priority).
# Teachers first: they head the longest chains (teacher -> students -> tuning); the small CLIP's
# pre-training (priority 2, clip.smk), needed only by MasQ-Tuning, runs beside the students. The
# rounds ablation's control ranks with the students: at priority 0 it was the last job left, one
# core idle for its 34 s and its evaluation's 10 s at the end of the default run.
TRAIN_RULES = {
    "train_teacher": ("teacher", 3),
    "train_student": ("student", 1),
    "train_control": ("control", 1),  # rounds ablation, off the chains
    "train_tuning": ("tuning", 1),
}

for rule_name, (kind, rank) in TRAIN_RULES.items():
    folder = f"seed{{seed}}/{STAGE_FOLDERS[kind]}"

    rule:
        name:
            rule_name
        input:
            config=lambda wc, kind=kind: stage_of(wc, kind).config,
            data=lambda wc, kind=kind: stage_of(wc, kind).inputs,
        output:
            **train_outputs(f"{R}/models/{{setting}}/{folder}"),
        params:
            launcher=lambda wc, kind=kind: launch_command(kind),
            outdir=output_dir,
            tags=lambda wc, kind=kind: train_tags(wc, kind),
            opts=lambda wc, kind=kind: stage_of(wc, kind).command_opts(),
            sig=lambda wc: wc.sig,  # in the between-workflow cache's hash, which skips wildcards
        log:
            f"{R}/logs/train/{{setting}}/{folder}.log",
        priority: rank
        resources:
            **res(kind),
        cache: "omit-software"
        conda:
            CONDA_ENV
        shell:
            "{params.launcher} train --config-file {input.config:q} --resume {params.tags} OUTPUT_DIR {params.outdir:q} {params.opts} > {log:q} 2>&1"
