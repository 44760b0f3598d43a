# Tables (Markdown, LaTeX, CSV, HTML), plots and qualitative overlays; all in the HTML report of
# `snakemake --report results/report.html`.


localrules:
    manifest,
    tables,
    plots,
    front_page,


# The contract between the plan and the tables/plots: every evaluation (setting, stage, round, seed,
# variant, test, metrics file), every table and plot. Written from the config by the package; the
# tables and plots read nothing else. Re-written when the plan changes (its digest is a param).
rule manifest:
    output:
        PLAN.manifest_file,
    params:
        config=json.dumps(config, sort_keys=True),
        digest=PLAN.manifest().digest(),
    log:
        f"{R}/logs/manifest.log",
    resources:
        **res("report"),
    conda:
        CONDA_ENV

    shell:
        "masqclip plan --config-json {params.config:q} --output {output:q} > {log:q} 2>&1"


rule tables:
    input:
        manifest=PLAN.manifest_file,
        metrics=[e.path for e in PLAN.evaluations],
    output:
        report(
            [f for f in PLAN.table_files() if f.endswith(".html")],
            caption="../report/tables.rst",
            category="Tables",
        ),
        [f for f in PLAN.table_files() if not f.endswith(".html")],
    params:
        outdir=output_dir,
    log:
        f"{R}/logs/tables.log",
    benchmark:
        f"{R}/benchmarks/tables.tsv"
    resources:
        **res("report"),
    conda:
        CONDA_ENV

    shell:
        "masqclip results tables --manifest {input.manifest:q} --output-dir {params.outdir:q} > {log:q} 2>&1"


rule plots:
    input:
        manifest=PLAN.manifest_file,
        metrics=[e.path for e in PLAN.evaluations],
        curves=PLAN.curve_files(),
        clip=list(PLAN.clip_metrics_files().values()),
    output:
        report(
            PLAN.plot_files(),
            caption="../report/plots.rst",
            category="Plots",
        ),
    params:
        outdir=output_dir,
    log:
        f"{R}/logs/plots.log",
    benchmark:
        f"{R}/benchmarks/plots.tsv"
    resources:
        **res("report"),
    conda:
        CONDA_ENV

    shell:
        "masqclip results plots --manifest {input.manifest:q} --output-dir {params.outdir:q} > {log:q} 2>&1"


# The report's front page: the headline tables (main results, distillation rounds) and the rounds
# plot in one HTML fragment, which workflow/report/workflow.rst includes.
FRONT_PAGE = f"{R}/report/front.html"


rule front_page:
    input:
        tables=[f for f in PLAN.table_files() if f.endswith(".html") and not os.path.basename(f).startswith("ablation_")]
        + [f for f in PLAN.table_files() if f.endswith(".html") and os.path.basename(f).startswith("ablation_rounds_")],
        plots=[f for f in PLAN.plot_files() if os.path.basename(f).startswith("base_novel_")],
    output:
        report(FRONT_PAGE, caption="../report/front.rst", category="Overview"),
    log:
        f"{R}/logs/front_page.log",
    resources:
        **res("report"),
    conda:
        CONDA_ENV

    shell:
        "masqclip results front-page --output {output} {input.tables} {input.plots} > {log} 2>&1"


rule qualitative:
    input:
        config=lambda wc: PLAN.final_stage(wc.setting).config,
        weights=lambda wc: PLAN.final_stage(wc.setting).weights,  # the first seed's model
        data=lambda wc: [PLAN.prepared(d) for d in config["settings"][wc.setting]["datasets"]],
    output:
        report(
            f"{R}/plots/qualitative/{{setting}}/{{index}}.png",
            caption="../report/qualitative.rst",
            category="Qualitative",
            subcategory="{setting}",
        ),
    params:
        image=lambda wc: f"{PLAN.data_root}/{config['qualitative'][wc.setting][int(wc.index)]}",
        opts=lambda wc: format_opts(PLAN.qualitative_opts(wc.setting)),
    log:
        f"{R}/logs/qualitative/{{setting}}/{{index}}.log",
    benchmark:
        f"{R}/benchmarks/qualitative/{{setting}}/{{index}}.tsv"
    resources:
        **res("evaluate"),
    conda:
        CONDA_ENV

    shell:
        "masqclip predict --config-file {input.config:q} --weights {input.weights:q} --image {params.image:q} --output {output:q} {params.opts} > {log:q} 2>&1"
