"""Tools of the book, kept apart from the training library: none of `smlib.models`,
`smlib.objectives`, `smlib.train` imports from here.

* `results`  — a re-export of `smlib.experiments.records` (recorded results and their provenance) for the chapters;
* `rerun`    — rerun a chapter with papermill parameters (needs the book tool chain);
* `timing`   — interleaved timings whose ratios are measured side by side (chapters and `bench/`);
* `reproduction` — a recorded run beside the live one, and the claims tables of the reproductions;
* `what_changed` — a re-record's verdicts beside the first record's, matched by claim id;
* `conventions` — the conventions page's estimator × model table, generated from the registry;
* `helpers`  — small helpers several chapters and the tests share (random parameters, hidden states).
"""
