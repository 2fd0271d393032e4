"""Standard hallucination benchmarks on local data: the CHAIR scorer (`chair`), COCO directories (`coco`),
scoring captions generated elsewhere (`score`), pinned CHAIR protocols (`protocol`), POPE (`pope`) and
AMBER (`amber`)."""
