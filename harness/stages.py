"""The stages of a run, in the order a frame passes them: every name the pipeline times (`timer.stage(name)`,
metric `<stage>_s`), and the order the stage tables and plots show them in. A stage a run does not time (gather,
outside a distributed run) is left out where it shows."""

STAGES = ("read", "audio", "detect", "align", "encode", "denoise", "decode", "restore", "gather", "write")
# gather: in a distributed run, rank 0 receiving the other ranks' restored frames (and each rank sending its own)
GPU_STAGES = ("encode", "denoise", "decode")  # gpu_busy_pct: their share of the wall time
