"""Face detector implementations (what they share: base.py); use harness.pipeline.faces.load_detector to get one."""
