"""Microannealing: choose mid-training data by many short anneals of one base.

A control arm anneals the base on its own data; each candidate arm replaces a share of that data
with a candidate source (or, in the recipe form, swaps one source of a recipe's final anneal for
yours). Every arm runs with several data orders (seeds), is scored on held-out domains, an
answer-token loss on held-out math, and optional lm-eval tasks, and is compared with the control:
better, worse, or within the seed-to-seed noise.

    design.py    the request (microanneal/params.yaml) -> arms, units and their checks
    plan.py      the plan stage: arms -> run specifications (one per arm × seed) and the scoring spec
    data.py      the extra streams: the degraded `math-noisy` candidate and registry sources
    score.py     held-out losses, the answer-token loss and lm-eval tasks of one unit
    stats.py     means, deltas, spreads, verdicts and ranks (pure)
    report.py    report/microanneal.md and its dot plot
    runner.py    `midtrain microanneal`: the DVC pipeline in microanneal/dvc.yaml, units in parallel
"""
