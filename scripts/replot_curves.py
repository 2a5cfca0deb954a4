"""Redraw a run's curves.png from its metrics.jsonl (after a change to the plot style, say).

python scripts/replot_curves.py RUN_DIR [RUN_DIR ...]
"""

import json
import sys
from pathlib import Path

from dgm_cli.plots import save_curves
from dgm_cli.registry import get_spec

for run in map(Path, sys.argv[1:]):
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    lines = get_spec(config["model"]).module_class.reference_lines
    save_curves(
        history, run / "curves.png", title=f"{config['model']} on {config['data']['name']}", reference_lines=lines
    )
    print(run / "curves.png")
