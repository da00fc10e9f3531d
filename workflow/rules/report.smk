# reports/: Tables 1-8 (Markdown + CSV) and figures, from every run's outputs and the
# FLOP counts. `snakemake --report report.html` embeds them (captions: workflow/report/).


rule report:
    input:
        train=expand(RUN.summary, run=RUN_IDS),
        test=expand(RUN.test_metrics, run=RUN_IDS),
        predictions=expand(RUN.test_predictions, run=RUN_IDS),  # the claims check's per-video results
        complexity=LAYOUT.complexity,
        recipes=config["recipes_file"],
    output:
        readme=LAYOUT.reports_readme,
        md=[LAYOUT.table(t) for t in TABLES],
        claims=report(LAYOUT.claims(), caption="../report/claims.rst", category="Claims"),
        claims_csv=LAYOUT.claims("csv"),
        csv=report(
            [LAYOUT.table(t, "csv") for t in TABLES],
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory(LAYOUT.figures),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    params:
        pfile=PARAMS_FILE,
        results=lambda w, input: os.path.dirname(input.complexity),  # results/complexity.json
        reports=lambda w, output: os.path.dirname(output.readme),
    log:
        LAYOUT.log("report.log"),
    threads: 1
    resources:
        **res("report"),
    shell:
        ENV + "far report --params {params.pfile:q} --results {params.results} --complexity {input.complexity} "
        "--out {params.reports} > {log} 2>&1"
