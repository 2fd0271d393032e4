"""Standard hallucination benchmarks: CHAIR, POPE and AMBER data, protocols and metrics (no model here)."""
