"""docs/python.md runs: its Python blocks, in order, in one namespace, from an empty folder (the pretrained
models come with the package), so the page cannot drift from the API it shows."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "python.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_every_python_block_of_docs_python_md_runs(tmp_path):
    blocks = code_blocks(PAGE.read_text())
    assert len(blocks) >= 8
    namespace = {"__name__": "docs_python_md"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"docs/python.md, block {number}", "exec"), namespace)
    assert (tmp_path / "vae-samples.png").is_file() and (tmp_path / "curve.png").is_file()
    assert (tmp_path / "runs" / "vae-notebook" / "metrics.jsonl").is_file()
