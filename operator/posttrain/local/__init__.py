"""The local runner: `posttrain run` drives the plan layer with local processes and servers.

Modules: `state` (the `.posttrain/` folder), `servers` (local OpenAI-compatible model servers),
`driver` (observations, actions, the loop), `display` (live view or log lines), `report` (HTML with
plots and a terminal summary). Kept free of imports here so `posttrain --help` stays fast.
"""
