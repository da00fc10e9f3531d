# Data check (docs/checkpoints.md): a released fine-tuned model tested on a prepared
# validation list with its published protocol, against its published top-1. Paper mode:
# VideoMAE's releases, before that dataset's fine-tunes (data_check.stop_before_training:
# a failed check exits 3 and no fine-tune of the dataset starts). The default, for which
# nothing was released, checks a stand-in: one of its own fine-tunes exported in the
# official layout with its own test as the published number. One job per model;
# reports/data_check.md gathers them.

rule data_stand_in:
    """The default's stand-in for a released model: a finished fine-tune in the official
    {"module": ...} layout, and a registry file naming it (far data stand-in)."""
    input:
        unpack(stand_in_inputs),
    output:
        checkpoint=RUN.release("{stand_in}", "pth"),
        registry=RUN.release("{stand_in}", "yaml"),
    params:
        run=lambda w: LAYOUT.run(w.run).dir,
        method=lambda w: GRID.runs[w.run].pretraining,
        backbone=lambda w: CHECKS[w.stand_in].backbone,
        source=lambda w: GRID.pretraining_source(GRID.runs[w.run].pretraining, GRID.runs[w.run].dataset),
    log:
        LAYOUT.log("data_check", "{run}.{stand_in}.log"),
    wildcard_constraints:
        stand_in="|".join(re.escape(n) for n, c in CHECKS.items() if c.stand_in) or "none",
    threads: 1
    resources:
        **res("data_stand_in"),
    shell:
        "far data stand-in {params.run} --name {wildcards.stand_in} --method {params.method} "
        "--backbone {params.backbone} --pretrain-dataset {params.source} --checkpoint {output.checkpoint:q} "
        "--registry {output.registry:q} > {log} 2>&1"


rule data_check:
    input:
        unpack(data_check_inputs),
    output:
        LAYOUT.run("{check}").data_check,
    params:
        flags=data_check_flags,
        out=lambda w: LAYOUT.run(w.check).dir,
        report=lambda w: LAYOUT.run(w.check).data_check_md,
    log:
        LAYOUT.run("{check}").data_check_log,
    wildcard_constraints:
        check="|".join(map(re.escape, CHECK_IDS)) or "none",
    priority: 50  # before the fine-tunes it may stop
    threads: threads("data_check")
    resources:
        **res("data_check"),
    shell:
        ENV + "far data check {params.flags} --out {params.out} "
        "--report {params.report} --no-progress > {log} 2>&1"


rule data_check_report:
    input:
        [LAYOUT.run(c).data_check for c in CHECK_IDS],
    output:
        md=LAYOUT.data_check_report(),
        json=LAYOUT.data_check_report("json"),
    log:
        LAYOUT.log("data_check_report.log"),
    threads: 1
    resources:
        **res("data_check_report"),
    shell:
        "far data check-report {input:q} --report {output.md} > {log} 2>&1"
