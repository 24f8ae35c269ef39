"""Documentation cannot drift from the code.

Every command shown in README.md, docs/*.md, docker/README.md and the sbatch scripts that runs one
of the project's Python entry points (`python x.py ...`, `torchrun ... x.py ...`, or the docker
image's pass-through `<image> x.py ...`) must name a file that exists and use only flags that the
script's argparse definitions declare; every `--config` file must exist; every
`--set section.key=value` must name a real config key; every torchrun option must be one torchrun
accepts; each documented training command's recipe loads with its overrides (types and choices
checked by the config loader). Inline mentions count too: `--flags` under a heading that names a
script, `section.key` config keys, relative links and their anchors. Flags are read statically
from `add_argument(...)` calls in the script and in the project modules it imports, which keeps
this test fast; only a flag not found that way (one built at run time) costs one
`python <script> --help`, cached per script.
"""
import ast
import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from pins import other_torch_than_the_images

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ENTRY_DIRS = {"", "eval", "tools", "benchmarks"}
SHELL_BREAKS = {"&&", "||", "|", ";", ">", ">>", "2>&1", "&", "<"}


def doc_files():
    files = [ROOT / "README.md", ROOT / "docker" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    return [f for f in files if f.exists()]


def sbatch_files():
    return sorted((ROOT / "docker" / "slurm").glob("*.sbatch"))


# ---- extracting commands ----------------------------------------------------------------------

def markdown_commands(text: str):
    """Shell command lines from fenced code blocks (continuations joined) and inline code spans."""
    lines = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.strip() for line in joined.splitlines()
                  if line.strip() and not line.strip().startswith("#")]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += [span for span in re.findall(r"`([^`\n]+)`", prose) if _names_our_script(span)]
    return lines


def _names_our_script(span: str) -> bool:
    """An inline code span that runs or names one of our entry points (not e.g. the reference
    code's `imagenet.py`)."""
    if re.match(r"(python3?|torchrun)\s", span):
        return True
    return bool(re.search(r"(^|\s)((eval|tools|benchmarks)/\S+|train_imagenet|train_cifar)\.py\b",
                          span))


def sbatch_commands(text: str):
    """The entry-point command of an sbatch script: script after "${TORCHRUN[@]}", plus its
    argument arrays (`X_ARGS=(...)`, `X_ARGS+=(...)`)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for m in re.finditer(r'"\$\{TORCHRUN\[@\]\}"\s+(\S+\.py)\s+"\$\{(\w+)\[@\]\}"', joined):
        script, array = m.groups()
        parts = re.findall(rf"^\s*{array}\+?=\((.*?)\)", joined, re.S | re.M)
        assert parts, f"no {array}=(...) definition found"
        torchrun = re.search(r"TORCHRUN=\((.*?)\)", joined, re.S).group(1)
        commands.append(f"{torchrun} {script} " + " ".join(parts))
    return commands


def tokens_of(line: str):
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose: fall back to whitespace
        return line.split()


def entry_point_calls(line: str):
    """[(script, [tokens after it]), ...] for each project entry point run on this line."""
    toks = tokens_of(line)
    calls = []
    for i, tok in enumerate(toks):
        if not tok.endswith(".py") or "=" in tok or (i > 0 and toks[i - 1] == "-m"):
            continue
        path = tok[2:] if tok.startswith("./") else tok
        folder = str(Path(path).parent).replace(".", "")
        if Path(path).name.startswith(".") or folder not in ENTRY_DIRS:
            continue
        rest = []
        for t in toks[i + 1:]:
            if t in SHELL_BREAKS:
                break
            rest.append(t)
        calls.append((path, toks[:i], rest))
    return calls


def flags_in(args):
    return [a.split("=", 1)[0] for a in args if re.fullmatch(r"--[A-Za-z][\w-]*(=.*)?", a)]


# ---- what the code declares -------------------------------------------------------------------

def _module_file(name: str, root: Path):
    base = root / Path(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _absolute_module(node: ast.ImportFrom, path: Path, root: Path):
    """Dotted name of an import, resolving `from ..x import y` against the importing file."""
    if node.level == 0:
        return node.module
    try:
        package = list(path.relative_to(root).parent.parts)
    except ValueError:
        return None
    base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join(base + ([node.module] if node.module else [])) or None


def _loop_built_flags(tree: ast.Module):
    """Flags made in a loop over a module-level literal, e.g.
    `for key in KEYS: parser.add_argument("--" + key.replace("_", "-"))`."""
    literals = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            try:
                literals[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    for loop in ast.walk(tree):
        if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)
                and isinstance(loop.iter, ast.Name) and loop.iter.id in literals):
            continue
        for call in ast.walk(loop):
            if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument" \
                    and call.args and not isinstance(call.args[0], ast.Constant):
                code = compile(ast.Expression(call.args[0]), "<flag>", "eval")
                for value in literals[loop.iter.id]:
                    flag = eval(code, {"__builtins__": {}}, {loop.target.id: value})
                    if isinstance(flag, str):
                        yield flag


@lru_cache(maxsize=None)
def _flags_and_imports(path: Path, root: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    flags, imported = set(_loop_built_flags(tree)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {a.value for a in node.args
                      if isinstance(a, ast.Constant) and isinstance(a.value, str)
                      and a.value.startswith("-")}
        elif isinstance(node, ast.ImportFrom):
            module = _absolute_module(node, path, root)
            if module:
                imported.add(module)
                imported |= {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    local = frozenset(m for m in imported if m.split(".")[0] in ("dali_pixmix", "eval", "tools")
                      and _module_file(m, root))
    return frozenset(flags), local


@lru_cache(maxsize=None)
def declared_flags(script: str, root: Path = ROOT):
    """Flags from add_argument calls in `script` and the project modules it imports
    (transitively)."""
    todo, seen, flags = [root / script], set(), {"--help", "-h"}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        found, modules = _flags_and_imports(path, root)
        flags |= found
        todo += [_module_file(m, root) for m in modules]
    return frozenset(flags)


@lru_cache(maxsize=None)
def help_flags(script: str, root: Path = ROOT):
    """Flags listed by `python <script> --help` (only used for flags built at run time)."""
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(root / script), "--help"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{script} --help failed: {done.stderr[-500:]}"
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", done.stdout))


@lru_cache(maxsize=None)
def torchrun_flags():
    from torch.distributed.run import get_args_parser
    return frozenset(s for a in get_args_parser()._actions for s in a.option_strings)


@lru_cache(maxsize=None)
def config_keys():
    import dataclasses

    from dali_pixmix.config import Config
    cfg = Config()
    return frozenset(f"{s.name}.{k.name}" for s in dataclasses.fields(cfg)
                     for k in dataclasses.fields(getattr(cfg, s.name)))


# ---- the check --------------------------------------------------------------------------------

def problems_in(line: str, where: str, root: Path = ROOT):
    """Human-readable problems with one documented command line (empty when it is right)."""
    out = []
    for script, before, args in entry_point_calls(line):
        if not (root / script).is_file():
            out.append(f"{where}: `{script}` does not exist")
            continue
        known = declared_flags(script, root)
        for flag in flags_in(args):
            if flag not in known and flag not in help_flags(script, root):
                out.append(f"{where}: `{script}` has no flag {flag}")
        for prev, arg in zip(args, args[1:]):
            if prev == "--config" and not (root / arg).is_file():
                out.append(f"{where}: config `{arg}` does not exist")
            if prev == "--set":
                key = arg.split("=", 1)[0]
                if "=" not in arg or key not in config_keys():
                    out.append(f"{where}: `--set {arg}` is not a config key")
        if script in ("train_imagenet.py", "train_cifar.py") and root == ROOT and not out:
            out += config_problems(args, where)
        if "torchrun" in before:
            for flag in flags_in(before[before.index("torchrun") + 1:]):
                if flag not in torchrun_flags() and not (
                        where.startswith("docker/") and other_torch_than_the_images()):
                    out.append(f"{where}: torchrun has no option {flag}")
    return out


def config_problems(args, where: str):
    """Load the documented recipe with its documented overrides (keys, types, choices)."""
    from dali_pixmix.config import load_config
    pairs = list(zip(args, args[1:]))
    configs = [v for k, v in pairs if k == "--config" and (ROOT / v).is_file()]
    if not configs:
        return []
    try:
        load_config(ROOT / configs[0], [v for k, v in pairs if k == "--set"])
    except (ValueError, FileNotFoundError) as err:
        return [f"{where}: {err}"]
    return []


def all_commands():
    cmds = []
    for f in doc_files():
        cmds += [(f"{f.relative_to(ROOT)}", c) for c in markdown_commands(f.read_text())]
    for f in sbatch_files():
        cmds += [(f"{f.relative_to(ROOT)}", c) for c in sbatch_commands(f.read_text())]
    return cmds


STAND_IN_SCRIPT = """
import argparse
from dali_pixmix.helpers import add_common


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[])
    add_common(p)
"""
STAND_IN_HELPER = """
def add_common(parser):
    parser.add_argument("--resume", "-r", default="none")
"""


def test_checker_catches_drift(tmp_path):
    """The checker itself, on a stand-in project: a wrong flag, file, config, config key or
    torchrun option is reported; right ones, including flags declared in an imported module,
    are not."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("train: {}\n")
    (tmp_path / "dali_pixmix").mkdir()
    (tmp_path / "dali_pixmix" / "__init__.py").write_text("")
    (tmp_path / "dali_pixmix" / "helpers.py").write_text(STAND_IN_HELPER)
    (tmp_path / "train_imagenet.py").write_text(STAND_IN_SCRIPT)
    good = ("torchrun --nproc_per_node=8 train_imagenet.py --config configs/demo.yaml "
            "--set data.train=/x --resume auto")
    assert problems_in(good, "doc", tmp_path) == []
    doc = "\n".join([
        "```bash",
        "python train_imagenet.py --config configs/no_such.yaml --no-such-flag 1 \\",
        "    --set train.no_such_key=3 --set data.train=/x",
        "torchrun --nproc_per_node=8 --no_such_opt=1 train_imagenet.py --config configs/demo.yaml",
        "```",
        "Then run `python tools/no_such_tool.py --x`.",
    ])
    found = [p for line in markdown_commands(doc) for p in problems_in(line, "doc", tmp_path)]
    text = "\n".join(found)
    assert "no_such.yaml" in text and "--no-such-flag" in text
    assert "train.no_such_key" in text and "data.train" not in text
    assert "--no_such_opt" in text and "--nproc_per_node" not in text
    assert "tools/no_such_tool.py` does not exist" in text


def test_documented_overrides_are_type_checked_against_the_recipe():
    bad = problems_in("python train_imagenet.py --config configs/demo.yaml --set train.amp=maybe",
                      "doc")
    assert len(bad) == 1 and "train.amp" in bad[0]
    assert problems_in("python train_imagenet.py --config configs/demo.yaml --set train.amp=bf16",
                       "doc") == []


def test_extraction_sees_continued_lines_and_images():
    doc = ("```bash\ndocker run --rm img:1 \\\n  eval/run_all.py --out /o   # comment\n```\n"
           "and `torchrun --nnodes=2 x/y.py --a`\n")
    calls = [c for line in markdown_commands(doc) for c in entry_point_calls(line)]
    assert [(s, a) for s, _, a in calls] == [("eval/run_all.py", ["--out", "/o"])]


def test_documentation_exists():
    names = {f.name for f in doc_files()}
    assert "README.md" in names
    for needed in ["install.md", "data.md", "training.md", "evaluation.md", "multi_node.md",
                   "benchmarks.md", "troubleshooting.md", "results.md"]:
        assert (ROOT / "docs" / needed).is_file(), f"docs/{needed} is missing"


def test_documented_commands_match_the_code():
    cmds = all_commands()
    calls = [c for _, line in cmds for c in entry_point_calls(line)]
    assert len(calls) >= 10, f"only {len(calls)} documented entry-point commands were found"
    problems = [p for where, line in cmds for p in problems_in(line, where)]
    assert not problems, "documentation drifted from the code:\n" + "\n".join(sorted(set(problems)))


def section_flag_mentions(text: str):
    """[(script, flag)] for inline `--flag` mentions under a heading that names one entry point."""
    found = []
    for section in re.split(r"^#+ ", text, flags=re.M)[1:]:
        heading, _, body = section.partition("\n")
        scripts = re.findall(r"`((?:eval|tools|benchmarks)/\w+\.py|train_(?:imagenet|cifar)\.py)`",
                             heading)
        if len(scripts) != 1:
            continue
        body = re.sub(r"```.*?```", "", body, flags=re.S)
        for span in re.findall(r"`([^`\n]+)`", body):
            found += [(scripts[0], f) for f in re.findall(r"(?<![\w-])(--[A-Za-z][\w-]*)", span)]
    return found


CONFIG_SECTIONS = ("data", "augment", "pixmix", "model", "optim", "train", "eval", "dist",
                   "demo")


def config_key_mentions(text: str):
    """Inline code spans that look like `section.key` or `section.key=value`."""
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [m.group(1) for s in spans
            if (m := re.fullmatch(rf"((?:{'|'.join(CONFIG_SECTIONS)})\.\w+)(?:[=:].*)?", s))]


def test_flags_named_in_script_sections_exist():
    problems, seen = [], 0
    for f in doc_files():
        for script, flag in section_flag_mentions(f.read_text()):
            seen += 1
            if not (ROOT / script).is_file():
                problems.append(f"{f.name}: section about `{script}`, which does not exist")
            elif flag not in declared_flags(script) and flag not in help_flags(script):
                problems.append(f"{f.name}: `{script}` has no flag {flag}")
    assert seen >= 5, "no flag mentions found under script headings"
    assert not problems, "\n".join(sorted(set(problems)))


def test_config_keys_named_in_docs_exist():
    mentions = [(f.name, k) for f in doc_files() for k in config_key_mentions(f.read_text())]
    assert len(mentions) >= 10
    bad = sorted({f"{name}: `{key}`" for name, key in mentions if key not in config_keys()})
    assert not bad, "documented config keys that do not exist:\n" + "\n".join(bad)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_and_anchors_resolve():
    checked, bad = 0, []
    for f in doc_files():
        text = re.sub(r"```.*?```", "", f.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (f.parent / path).resolve() if path else f
            checked += 1
            if not dest.exists():
                bad.append(f"{f.relative_to(ROOT)}: link to missing {target}")
            elif anchor and dest.suffix == ".md":
                prose = re.sub(r"```.*?```", "", dest.read_text(), flags=re.S)
                slugs = {github_slug(h) for h in re.findall(r"^#+ (.+)$", prose, re.M)}
                if anchor not in slugs:
                    bad.append(f"{f.relative_to(ROOT)}: no heading #{anchor} in {path or f.name}")
    assert checked >= 10
    assert not bad, "\n".join(bad)


def test_github_slug_examples():
    assert github_slug("Anomaly detection: `eval/ood.py`") == "anomaly-detection-evaloodpy"
    assert github_slug("ImageNet (ILSVRC-2012)") == "imagenet-ilsvrc-2012"


def test_quickstart_commands_unchanged():
    text = (ROOT / "README.md").read_text()
    assert "pip install -e . && python train_imagenet.py --config configs/demo.yaml" in text
    assert 'pip install -e ".[test]" && python -m pytest -q' in text


def test_results_table_has_the_papers_rows():
    text = (ROOT / "docs" / "results.md").read_text()
    for row in ["| Baseline | 23.9 | 78.2 | 61.0 | 63.8 | 58.0 | 78.4 | 5.6 | 12.0 | 20.7 | 19.7 "
                "| 79.7 | 48.6 |",
                "| AugMix | 22.8 | 71.0 | 56.5 | 61.7 | 52.7 | 70.9 | 4.5 | 9.2 | 15.0 | 13.2 "
                "| 84.2 | 61.1 |",
                "| PixMix | 22.6 | 65.8 | 44.3 | 60.1 | 51.1 | 69.1 | 3.6 | 6.3 | 5.8 | 11.0 "
                "| 85.7 | 64.1 |"]:
        assert row in text, f"docs/results.md lacks the paper's row {row.split('|')[1].strip()}"


def test_docs_hold_no_machine_paths():
    for f in doc_files() + sbatch_files():
        for bad in ("/" + top + "/" for top in ("work", "root")):
            assert bad not in f.read_text(), f"{f.relative_to(ROOT)} contains a machine path {bad}"
