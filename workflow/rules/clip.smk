# Pre-training of the small CLIP on the synthetic world's captioned crops (the stand-in for
# web-scale CLIP pre-training), per seed. Real runs use open_clip's released weights and skip this
# rule, as does a config that gives `clip.weights`.
# Cached between workflows, hence no `benchmark:` (Snakemake refuses both on one rule).


rule pretrain_clip:
    input:
        data=lambda wc: stage_of(wc, "clip").inputs,
    output:
        weights=protected(f"{R}/models/clip/seed{{seed}}/{{sig}}/tiny.pt"),
        metrics=f"{R}/models/clip/seed{{seed}}/{{sig}}/tiny.json",  # zero-shot crop accuracy, beside the weights
    params:
        crops=lambda wc: f"{PLAN.data_root}/{PLAN.config['clip']['dataset']}/clip_crops",
        args=lambda wc: flags(PLAN.config["clip"].get("args", {})),
        # In the between-workflow cache's hash (it hashes params, not wildcards): the seed, and the
        # signature (world and behaviour versions included), so no seed or code version gets another's CLIP.
        seed=lambda wc: wc.seed,
        sig=lambda wc: wc.sig,
    log:
        f"{R}/logs/clip/seed{{seed}}/{{sig}}.log",
    priority: 2  # after the teachers, before the students (train.smk)
    resources:
        **res("clip"),
    cache: "omit-software"
    conda:
        CONDA_ENV

    shell:
        "masqclip pretrain-clip --crops {params.crops:q} --output {output.weights:q} --metrics {output.metrics:q} --seed {params.seed:q} {params.args} > {log:q} 2>&1"
