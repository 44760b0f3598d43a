# Dataset preparation: generate the synthetic world, or convert a raw release into the layout the
# dataset catalog reads under $DETECTRON2_DATASETS (= config["data_root"]). CPU only.
# The done-file every training and evaluation job depends on appears only once `masqclip check-data`
# has passed (image counts, class table, labels, segments), so bad data stops the run before any GPU
# job starts. `masqclip prepare` also writes the preparation's manifest, which the jobs' MLflow runs name.
# Both commands find the data under $DETECTRON2_DATASETS (= data_root, set for every job in common.smk).


rule prepare:
    output:
        done=touch(f"{PLAN.data_root}/.prepared/{{dataset}}.done"),
        manifest=f"{PLAN.data_root}/.prepared/{{dataset}}.json",
    params:
        args=lambda wc: PLAN.prepare_args(wc.dataset),
        expect=lambda wc: PLAN.config["datasets"][wc.dataset].get("check", "full"),
        workers=lambda wc, resources: int(getattr(resources, "cpus_per_task", 1) or 1),
        identity=lambda wc: json.dumps(PLAN.data_identity(wc.dataset), sort_keys=True),  # re-prepare on change
    log:
        f"{R}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/prepare/{{dataset}}.tsv"
    resources:
        **res("prepare"),
    conda:
        CONDA_ENV

    shell:
        "masqclip prepare {wildcards.dataset:q} {params.args} > {log:q} 2>&1"
        " && masqclip check-data {wildcards.dataset:q} --expect {params.expect:q} --workers {params.workers:q} >> {log:q} 2>&1"
