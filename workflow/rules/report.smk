# reports/: Tables 1-8 (Markdown + CSV) and figures, from every run's outputs and the
# FLOP counts. `snakemake --report report.html` embeds them (captions: workflow/report/).


rule report:
    input:
        train=expand(RUN.summary, run=RUN_IDS),
        test=expand(RUN.test_metrics, run=RUN_IDS),
        predictions=expand(RUN.test_predictions, run=RUN_IDS),  # the claims check's per-video results
        history=expand(RUN.history, run=RUN_IDS),  # training curves
        steps=expand(RUN.steps, run=RUN_IDS),
        complexity=LAYOUT.complexity,
        recipes=config["recipes_file"],
        gradcam=GRADCAM_DIRS,  # Figures 6/7 and their localisation.json (the localisation table)
        # The data checks' verdicts (README) and released models' tests (cells filled from them).
        checks=[LAYOUT.run(c.run_id).data_check for c in CHECKS.values()],
    output:
        readme=LAYOUT.reports_readme,
        md=[LAYOUT.table(t) for t in TABLES],
        csv=[LAYOUT.table(t, "csv") for t in TABLES],
        # One report entry per table, shown inline (HTML), labelled with its number.
        **{
            f"html{t}": report(
                LAYOUT.table(t, "html"),
                caption="../report/tables.rst",
                category="Tables",
                labels={"table": f"Table {t}"},
            )
            for t in TABLES
        },
        claims=LAYOUT.claims(),
        claims_csv=LAYOUT.claims("csv"),
        claims_html=report(LAYOUT.claims("html"), caption="../report/claims.rst", category="Claims check",
                           labels={"claims": "all claims"}),
        # The localisation table of Figures 6/7, next to them in the HTML report (only when
        # the params list Table 7 or 8).
        **(
            {
                "localisation": LAYOUT.localisation(),
                "localisation_csv": LAYOUT.localisation("csv"),
                "localisation_html": report(
                    LAYOUT.localisation("html"),
                    caption="../report/localisation.rst",
                    category="Figures 6 and 7 (GradCAM)",
                    labels={"figure": "localisation table", "seed": "all", "video": "all"},
                ),
            }
            if GRADCAM_JOBS
            else {}
        ),
        figures=report(
            directory(LAYOUT.figures),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            labels={"figure": "{name}"},
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
