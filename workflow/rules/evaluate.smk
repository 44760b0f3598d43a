# One `masqclip eval` job per (setting, seed, model variant, test set) the config plans: the final model
# on every test set, and the ablation variants (object score off, frozen CLIP, earlier rounds,
# class-agnostic recall per round). Eval-time switches are config overrides, so they need no
# training; the metrics JSON is what the tables read (never MLflow).


rule evaluate:
    input:
        config=lambda wc: evaluation(wc).config,
        weights=lambda wc: evaluation(wc).weights,
        data=lambda wc: evaluation(wc).inputs,
    output:
        metrics=f"{R}/metrics/{{setting}}/seed{{seed}}/{{variant}}/{{test}}.json",
    params:
        dataset=lambda wc: evaluation(wc).dataset,
        opts=lambda wc: format_opts(evaluation(wc).opts),
        config_sig=lambda wc: evaluation(wc).config_sig,  # re-run when the YAML or its _BASE_ changes
        stage=lambda wc: evaluation(wc).stage,  # the evaluated model's stage and round (MLflow tags)
        round=lambda wc: evaluation(wc).round,
    log:
        f"{R}/logs/eval/{{setting}}/seed{{seed}}/{{variant}}/{{test}}.log",
    benchmark:
        f"{R}/benchmarks/eval/{{setting}}/seed{{seed}}/{{variant}}/{{test}}.tsv"
    resources:
        **res("evaluate"),
    conda:
        CONDA_ENV

    shell:
        "masqclip eval --config-file {input.config:q} --dataset {params.dataset:q} --output {output.metrics:q} --tag setting={wildcards.setting:q} --tag stage={params.stage:q} --tag round={params.round:q} --tag seed={wildcards.seed:q} --tag variant={wildcards.variant:q} --tag test={wildcards.test:q} --tag dataset={params.dataset:q} MODEL.WEIGHTS {input.weights:q} {params.opts} > {log:q} 2>&1"
