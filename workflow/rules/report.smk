# reports/: Tables 1-8 (Markdown + CSV) and figures, from every run's outputs and the
# FLOP counts. `snakemake --report report.html` embeds them (captions: workflow/report/).


rule report:
    input:
        train=expand(RUN_DIR + "/train.json", run=RUN_IDS),
        test=expand(RUN_DIR + "/test/metrics.json", run=RUN_IDS),
        complexity=RESULTS + "/complexity.json",
        recipes=config["recipes_file"],
    output:
        readme="reports/README.md",
        md=expand("reports/table{t}.md", t=TABLES),
        csv=report(
            expand("reports/table{t}.csv", t=TABLES),
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory("reports/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        "logs/report.log",
    threads: 1
    resources:
        **res("report"),
    shell:
        ENV + "far report --params " + PARAMS_ARG + " --results " + RESULTS + " --complexity {input.complexity} "
        "--out reports > {log} 2>&1"
