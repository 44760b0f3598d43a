# One `masqclip eval --spec` job per trained model (setting, seed, weights file) the config plans to
# evaluate: all of that model's evaluations in one process (start-up and model build paid once), each
# with its own config, overrides, metrics JSON and MLflow run. The evaluations: the final model on
# every test set, and the ablation variants (object score off, frozen CLIP, earlier rounds,
# class-agnostic recall per round). Eval-time switches are config overrides, so they need no
# training; the metrics JSON is what the tables read (never MLflow). A job's metrics paths differ in
# their variant and test folders, so each job is its own rule (named evaluate_<setting>_seed<seed>_<model>).


for _job in PLAN.eval_jobs():

    rule:
        name:
            _job.name
        input:
            configs=_job.configs,
            data=_job.inputs,
        output:
            metrics=_job.outputs,
        params:
            spec=_job.spec(),  # every evaluation's config, test set, overrides and MLflow tags (re-run when they change)
            config_sigs=_job.config_sigs,  # re-run when a YAML or its _BASE_ changes
        log:
            f"{R}/logs/eval/{_job.setting}/seed{_job.seed}/{_job.model}.log",
        benchmark:
            f"{R}/benchmarks/eval/{_job.setting}/seed{_job.seed}/{_job.model}.tsv"
        priority: 1 if _job.evaluations[0].stage == "tuning" else 0  # the final models' results end the run
        resources:
            **res("evaluate"),
        conda:
            CONDA_ENV
        shell:
            "masqclip eval --spec {params.spec:q} > {log:q} 2>&1"
