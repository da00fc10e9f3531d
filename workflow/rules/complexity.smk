# FLOPs / parameters of the paper-size models (Tables 2-8) with fvcore.


rule complexity:
    output:
        LAYOUT.complexity,
    log:
        LAYOUT.log("complexity.log"),
    priority: 20  # off the critical path: runs alongside the fine-tunes, not last
    threads: threads("complexity")
    resources:
        **res("complexity"),
    shell:
        ENV + "far complexity --json --out {output} > {log} 2>&1"
