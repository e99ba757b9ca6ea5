"""The synthetic 2-D experiment of Michel, Ruder & Yogatama, "Balancing Average and Worst-Case
Accuracy in Multitask Learning": a cluster of tasks, one outlier behind a forbidden disc.

Run it with ``python -m toy.synthetic --output_dir DIR``.
"""
