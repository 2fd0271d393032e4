"""Standard hallucination benchmarks on local data: the CHAIR scorer (`chair`), COCO directories (`coco`),
and scoring captions generated elsewhere (`score`)."""
