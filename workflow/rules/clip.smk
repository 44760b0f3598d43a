# Pre-training of the small CLIP on the synthetic world's captioned crops (the stand-in for
# web-scale CLIP pre-training). Real runs use open_clip's released weights and skip this rule.
# Cached between workflows, hence no `benchmark:` (Snakemake refuses both on one rule).


rule pretrain_clip:
    input:
        data=lambda wc: PLAN.stage("clip", "", 0, wc.sig).inputs,
    output:
        weights=protected(f"{R}/models/clip/{{sig}}/tiny.pt"),
        metrics=f"{R}/models/clip/{{sig}}/tiny.json",  # zero-shot crop accuracy, written beside the weights
    params:
        crops=lambda wc: f"{PLAN.data_root}/{PLAN.config['clip']['dataset']}/clip_crops",
        args=lambda wc: flags(PLAN.config["clip"].get("args", {})),
        seed=PLAN.seed,
    log:
        f"{R}/logs/clip/{{sig}}.log",
    priority: 2  # after the teachers, before the students (train.smk)
    resources:
        **res("clip"),
    cache: "omit-software"
    conda:
        CONDA_ENV

    shell:
        "masqclip pretrain-clip --crops {params.crops:q} --output {output.weights:q} --metrics {output.metrics:q} --seed {params.seed:q} {params.args} > {log:q} 2>&1"
