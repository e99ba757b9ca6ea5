"""Paper experiments that drive `run_mlm_ldro.py`, so experiments and the script share one code path.

Run one with `python -m hf_ldro.experiments <name> ...`; `python -m hf_ldro.experiments --help`
lists them. Available: `table1` (multilingual language modelling, see `hf_ldro.experiments.table1`).
"""
