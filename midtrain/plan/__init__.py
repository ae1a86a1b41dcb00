"""Planning: a recipe and a target (stand-in scale, own base, or the published base) -> a typed plan.

- `request`: what the user asks (params.yaml / CLI options), typed;
- `bases`: resolve a base model like a download, read its config (never its code);
- `rules`: the scaling rules, pure functions;
- `planner`: one stage loop for every target;
- `contract`: the typed plan files and the `Layout` that owns every path;
- `overrides`: `--set KEY=VALUE` on recipe data.
"""
