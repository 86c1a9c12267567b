"""Face detector implementations; use harness.pipeline.faces.load_detector to get one."""
