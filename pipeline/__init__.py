"""The mma pipeline: data and stage logic, one sub-package per stage of the graph.

    core -> weights -> data -> prep -> store -> engine -> results -> experiments   (and demo, which runs them all)

A sub-package imports only from `core` and the stages before it; nothing imports `cli.py`.
`docs/architecture.md` maps every module.
"""
