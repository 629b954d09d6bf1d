"""The GPU check: ``python -m bone_age.bench.gpu --out DIR [--dry-run]`` (``make gpu-check``).

One call on a GPU machine verifies every GPU path of bone-age and measures the paper-scale
figures of Table 1 (smoke tests, training throughput and MFU, input pipeline, a paper-scale
run, the Table 1 projection, two sweep points on one GPU). ``--dry-run`` runs every stage at
tiny sizes on the CPU, so the kit is tested by ``make test`` between GPU runs.
"""
