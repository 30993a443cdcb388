"""Where a Snakemake run's time went, from its log: per rule, the jobs, their summed wall time and the span
from the first start to the last finish. A benchmark helper, run on purpose:

    .venv/bin/python benchmarks/timeline.py .snakemake/log/<run>.snakemake.log   (or a saved stdout/stderr)

Job starts and finishes are read from Snakemake's own "[date] / rule X: / jobid: N" and "[date] / Finished
jobid: N (Rule: X)" lines, so times have one-second resolution.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime

import pandas as pd

STAMP = re.compile(r"\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")
START = re.compile(r"^(?:local)?rule (\w+):")
JOBID = re.compile(r"^\s+jobid: (\d+)")
FINISH = re.compile(r"Finished jobid: (\d+) \(Rule: (\w+)\)")


def timeline(lines: list[str]) -> pd.DataFrame:
    """One row per job: rule, jobid, start, end, seconds."""
    now, pending, jobs = None, None, {}
    for line in lines:
        if m := STAMP.search(line):
            now = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        if m := START.match(line):
            pending = (m.group(1), now)
        elif (m := JOBID.match(line)) and pending:
            jobs[int(m.group(1))] = {"rule": pending[0], "jobid": int(m.group(1)), "start": pending[1]}
            pending = None
        elif m := FINISH.search(line):
            if int(m.group(1)) in jobs:
                jobs[int(m.group(1))]["end"] = now
    frame = pd.DataFrame([j for j in jobs.values() if "end" in j])
    frame["seconds"] = (frame["end"] - frame["start"]).dt.total_seconds()
    return frame


def main() -> None:
    with open(sys.argv[1], errors="replace") as f:
        jobs = timeline(f.read().replace("\r", "\n").splitlines())
    per_rule = jobs.groupby("rule").agg(jobs=("jobid", "size"), job_seconds=("seconds", "sum"),
                                        first_start=("start", "min"), last_end=("end", "max"))
    t0 = jobs["start"].min()
    per_rule["from_s"] = (per_rule["first_start"] - t0).dt.total_seconds().astype(int)
    per_rule["to_s"] = (per_rule["last_end"] - t0).dt.total_seconds().astype(int)
    print(per_rule.drop(columns=["first_start", "last_end"]).sort_values("from_s").to_string())
    print(f"whole run: {(jobs['end'].max() - t0).total_seconds():.0f} s, {len(jobs)} jobs")


if __name__ == "__main__":
    main()
