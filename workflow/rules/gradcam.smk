# Figures 6 and 7: GradCAM of Table 7's (SSv2: MVD vs FAR) and Table 8's (K400: VideoMAE vs
# FAR) ViT-S cells, per seed, on videos chosen by a stated rule, with the localisation
# score where the data have object masks (`far gradcam`, far/reports/gradcam.py).


rule gradcam:
    input:
        unpack(gradcam_inputs),
    output:
        report(
            directory(LAYOUT.gradcam("{figure}", "{seed}")),
            patterns=["{name}.png"],
            caption="../report/gradcam.rst",
            category="Figures 6 and 7 (GradCAM)",
            labels={"figure": "Figure {figure}", "seed": "{seed}", "video": "{name}"},
        ),
    params:
        pfile=PARAMS_FILE,
        results=LAYOUT.results,
    log:
        LAYOUT.log("gradcam", "figure{figure}_s{seed}.log"),
    threads: threads("gradcam")
    resources:
        **res("gradcam"),
    shell:
        ENV + "far gradcam --params {params.pfile:q} --figure {wildcards.figure} --seed {wildcards.seed} "
        "--results {params.results} --out {output} > {log} 2>&1"
