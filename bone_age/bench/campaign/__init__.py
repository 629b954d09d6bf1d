"""The Table 1 campaign (``experiments/table1``): paper-scale runs over short GPU visits, merged
here into one table (``python -m bone_age.bench.campaign``)."""
