"""The self-check's outputs: a console table, `check_gpu.json` and `check_gpu.md`.

JSON layout: `{"environment": {...}, "advice": [{"level", "text"}], "checks": [{"name",
"status", "detail", "seconds"}], "throughput": [{"name", "status", "images_per_s",
"baseline_images_per_s", "baseline", "ratio", "goal", "met", "detail", "seconds"}],
"settings": {...}}`; `status` is pass, fail or skip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

JSON_NAME, MARKDOWN_NAME = "check_gpu.json", "check_gpu.md"


@dataclass
class Report:
    environment: Dict
    advice: List[Dict] = field(default_factory=list)
    checks: List[Dict] = field(default_factory=list)
    throughput: List[Dict] = field(default_factory=list)
    settings: Dict = field(default_factory=dict)
    run: Dict = field(default_factory=dict)  # started (UTC), seconds, command

    @property
    def failed(self) -> List[str]:
        """Names of the functional checks that failed (they set the exit status)."""
        return [c["name"] for c in self.checks if c["status"] == "fail"]

    @property
    def out_of_time(self) -> List[str]:
        """Names of the checks and measurements the time budget left unrun or unfinished."""
        return [c["name"] for c in self.checks + self.throughput if c.get("out_of_time")]

    def as_json(self) -> Dict:
        return {"environment": self.environment, "advice": self.advice, "checks": self.checks,
                "throughput": self.throughput, "settings": self.settings, "run": self.run}

    def write(self, out: Path) -> List[Path]:
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / JSON_NAME, out / MARKDOWN_NAME
        json_path.write_text(json.dumps(self.as_json(), indent=2, default=str) + "\n")
        md_path.write_text(markdown(self))
        return [json_path, md_path]


# ----------------------------------------------------------------------------- formatting
def _or_dash(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def environment_lines(env: Dict) -> List[str]:
    if "error" in env:
        return [f"environment unreadable: {env['error']}"]
    dali = (f"DALI {env['dali']} ({', '.join(env.get('dali_wheels') or []) or 'wheel unknown'})"
            if env.get("dali") else "DALI not importable")
    pyav = (f"PyAV {env['pyav']}{'' if env.get('pyav_libx264') else ' (no libx264)'}"
            if env.get("pyav") else "PyAV not importable")
    lines = [f"Python {env.get('python')}, torch {env.get('torch')} (CUDA "
             f"{_or_dash(env.get('torch_cuda'))}, cuDNN {_or_dash(env.get('cudnn'))}), "
             f"torchvision {env.get('torchvision')}",
             f"{dali}, {pyav}", decoding_line(env),
             f"driver {_or_dash(env.get('driver'))} (CUDA {_or_dash(env.get('driver_cuda'))}), "
             f"NCCL {_or_dash(env.get('nccl'))}, {env.get('cpu_cores')} CPU cores"]
    for gpu in env.get("gpus") or []:
        lines.append(f"GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gib']} GiB, "
                     f"compute capability {gpu['capability']}")
    if not env.get("gpus"):
        lines.append("no CUDA device visible to torch")
    return lines


def decoding_line(env: Dict) -> str:
    """Where DALI, nvImageCodec and nvJPEG were loaded from (or why they were not)."""
    parts = []
    for key, name in (("dali", "DALI"), ("nvimgcodec", "nvImageCodec"), ("nvjpeg", "nvJPEG")):
        where = env.get(f"{key}_path")
        parts.append(f"{name} {env.get(key) or '?'} from {where}" if where else
                     f"{name} not loaded ({env.get(f'{key}_error') or 'not looked for'})")
    return "decoding: " + "; ".join(parts)


def _table(rows: List[List[str]], indent: str = "  ") -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
            for r in rows]


def _met(value: Optional[bool]) -> str:
    return {True: "yes", False: "NO", None: "-"}[value]


def _rate(value) -> str:
    return _or_dash(value, "{:,.0f}")


def check_rows(checks: List[Dict]) -> List[List[str]]:
    rows = [["check", "status", "time", "detail"]]
    for c in checks:
        rows.append([c["name"], c["status"].upper(), _or_dash(c.get("seconds"), "{:.1f}s"),
                     c.get("detail", "")])
    return rows


def throughput_rows(items: List[Dict]) -> List[List[str]]:
    rows = [["measurement", "img/s", "baseline", "ratio", "goal", "met"]]
    for t in items:
        if t["status"] != "pass":
            rows.append([t["name"], t["status"].upper(), "", "", "", t.get("detail", "")])
            continue
        rows.append([t["name"], _rate(t.get("images_per_s")),
                     _rate(t.get("baseline_images_per_s")), _or_dash(t.get("ratio"), "{:.2f}"),
                     t.get("goal") or "-", _met(t.get("met"))])
    return rows


def console(report: Report) -> str:
    out = ["", f"Run: {run_line(report)}", "", "Environment"]
    out += ["  " + line for line in environment_lines(report.environment)]
    out += [f"  {a['level']}: {a['text']}" for a in report.advice]
    out += ["", "Functional checks"] + _table(check_rows(report.checks))
    if report.throughput:
        out += ["", "Throughput (goals: one H100/H200)"] + _table(throughput_rows(
            report.throughput))
        out += [f"  {t['name']}: {t['detail']}" for t in report.throughput
                if t["status"] == "pass" and t.get("detail")]
    out += ["", summary(report)]
    return "\n".join(out)


def summary(report: Report) -> str:
    counts = {s: sum(c["status"] == s for c in report.checks) for s in ("pass", "fail", "skip")}
    line = (f"{len(report.checks)} functional checks: {counts['pass']} pass, {counts['fail']} "
            f"fail, {counts['skip']} skip")
    judged = [t for t in report.throughput if t.get("met") is not None]
    if judged:
        line += f"; throughput goals met: {sum(t['met'] for t in judged)} of {len(judged)}"
    if report.failed:
        line += f". FAILED: {', '.join(report.failed)}"
    if report.out_of_time:
        line += (f". INCOMPLETE: {len(report.out_of_time)} not run or not finished for lack of "
                 f"time ({', '.join(report.out_of_time)}); raise --budget")
    return line


def _md_table(rows: List[List[str]]) -> List[str]:
    def cells(row):
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
    return [cells(rows[0]), "|" + "---|" * len(rows[0])] + [cells(r) for r in rows[1:]]


def run_line(report: Report) -> str:
    """'2026-11-30 04:45 UTC, 312 s, dali-pixmix 0.1.0 (git 1a2b3c4d), `tools/check_gpu.py
    --quick`': when, how long, which code and which command."""
    run, env = report.run, report.environment
    parts = [run.get("started", "start unknown"),
             f"{run['seconds']:.0f} s" if run.get("seconds") is not None else None,
             f"dali-pixmix {env.get('dali_pixmix', '?')} (git {str(env.get('git', '?'))[:12]})",
             f"`{run['command']}`" if run.get("command") else None]
    return ", ".join(p for p in parts if p)


def markdown(report: Report) -> str:
    out = ["# dali-pixmix machine check", "", f"Run: {run_line(report)}", "",
           "## Environment", ""]
    out += [f"- {line}" for line in environment_lines(report.environment)]
    out += [f"- **{a['level']}**: {a['text']}" for a in report.advice]
    out += ["", "## Functional checks", ""] + _md_table(check_rows(report.checks))
    if report.throughput:
        out += ["", "## Throughput (goals: one H100/H200)", ""]
        out += _md_table(throughput_rows(report.throughput))
        out += [""] + [f"- `{t['name']}`: {t['detail']}" for t in report.throughput
                       if t.get("detail")]
    out += ["", summary(report), ""]
    return "\n".join(out)
