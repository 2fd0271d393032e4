"""Names that the world, placement, training and the command line share, in a module that imports nothing (so
`--help` stays instant and every copy is this one)."""

FILLERS = ("count", "said")  # the painter world's text-only stretches: a counter, or decoy "said" sentences
PLACEMENTS = ("strided", "peak", "decay")  # the paper's PVM insertion strategies (placement.py)
