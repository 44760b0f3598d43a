# Dataset preparation: generate the synthetic world, or convert a raw release into the layout the
# dataset catalog reads under $DETECTRON2_DATASETS (= config["data_root"]). CPU only.


rule prepare:
    output:
        done=touch(f"{PLAN.data_root}/.prepared/{{dataset}}.done"),
    params:
        args=lambda wc: PLAN.prepare_args(wc.dataset),
    log:
        f"{R}/logs/prepare/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/prepare/{{dataset}}.tsv"
    resources:
        **res("prepare"),
    conda:
        CONDA_ENV

    shell:
        "masqclip prepare {wildcards.dataset} {params.args} > {log} 2>&1"
