"""report.py over every stored GPU run (bench/results/*/results.json), each bench's JSON laid
out again as gpu.sh leaves it: CI's check that report.py still reads what real GPUs wrote
(it runs last in the device call, where a crash would cost that call its report)."""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

runs = sorted(Path("bench/results").glob("*/results.json"))
for results in runs:
    with tempfile.TemporaryDirectory() as work:
        for name, value in json.loads(results.read_text()).items():
            # (clocks: report.py's own summary of clocks.csv, which is not kept)
            if name != "clocks":
                Path(work, f"{name}.json").write_text("" if value is None else json.dumps(value))
        done = subprocess.run([sys.executable, "bench/report.py", work, work], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"report.py failed on {results}:\n{done.stderr}")
        if "| figure | Hearth | peer |" not in Path(work, "report.md").read_text():
            sys.exit(f"report.py wrote no table of figures for {results}")
print(f"report.py read {len(runs)} stored GPU runs")
