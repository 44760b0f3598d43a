# Tables (Markdown, LaTeX, CSV, HTML), plots and qualitative overlays; all in the HTML report of
# `snakemake --report results/report.html`.


localrules:
    tables,
    plots,
    front_page,


rule tables:
    input:
        metrics=[e.path for e in PLAN.evaluations],
    output:
        report(
            [f for f in PLAN.table_files() if f.endswith(".html")],
            caption="../report/tables.rst",
            category="Tables",
        ),
        [f for f in PLAN.table_files() if not f.endswith(".html")],
    params:
        settings=shlex.join(PLAN.settings),
        rounds=PLAN.rounds,
        ablations=shlex.quote(json.dumps(config.get("ablations", {}))),
        paper="--paper" if config["paper_numbers"] else "",
        miou=shlex.quote(config.get("miou_convention", "gt")),
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
        "masqclip results tables --output-dir {params.outdir:q} --settings {params.settings} --rounds {params.rounds:q} --ablations {params.ablations} {params.paper} --miou-convention {params.miou} {input.metrics:q} > {log:q} 2>&1"


rule plots:
    input:
        metrics=[e.path for e in PLAN.evaluations],
        curves=[f"{s.folder}/metrics.jsonl" for s in PLAN.stages.values()],
        clip=[s.weights for s in PLAN.stages_of("clip")],
    output:
        report(
            PLAN.plot_files(),
            caption="../report/plots.rst",
            category="Plots",
        ),
    params:
        settings=shlex.join(PLAN.settings),
        rounds=PLAN.rounds,
        ablations=shlex.quote(json.dumps(config.get("ablations", {}))),
        train=" ".join(
            "--train "
            + shlex.quote(f"{s.setting}/{os.path.basename(s.folder).rsplit('-', 1)[0]}={s.folder}/metrics.jsonl")
            for s in PLAN.stages.values()  # teachers, students, controls and tunings, in lineage order
        ),
        clip=" ".join(f"--clip-weights {shlex.quote(s.weights)}" for s in PLAN.stages_of("clip")),
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
        "masqclip results plots --output-dir {params.outdir:q} --settings {params.settings} --rounds {params.rounds:q} --ablations {params.ablations} {params.train} {params.clip} {input.metrics:q} > {log:q} 2>&1"


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
        weights=lambda wc: PLAN.final_stage(wc.setting).weights,
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
