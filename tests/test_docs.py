"""The documentation is true: docs code runs, links resolve, references match the code.

Docs convention (every ``docs/*.md`` page):

* a page runs as a reader would run it: all its ```` ```python ```` blocks, in order, as
  one script in a fresh python process (``subprocess``), in an empty temporary folder, so
  a page is self-contained (it makes its own data, e.g.
  ``seg.make_synthetic_dataset('data', ...)``) and cannot lean on what other tests imported;
* the ``paddlex_seg ...`` command lines of its ```` ```bash ```` blocks run too, at their
  place in the page, through ``paddlex_seg.cli.main`` in that same process
  (``compress`` and ``serve`` lines are only parsed: too slow here, or never return;
  tests/slim/test_compress.py and tests/deploy/test_serve.py run them);
* ```` ```python no-run ```` (or ```` ```bash no-run ````) marks the rare block that cannot run
  here (GPU, internet, hours); the page says why; ```` ```text ```` and other blocks are
  not executed;
* a failure names the page, the block, the failing line of the .md file and the process's
  stderr (the script keeps each block at its page lines, so tracebacks name page lines).

The README's short example runs the same way. To keep this file fast, the script's line 1
imports a prelude that makes sensitivity analysis measure one pruning ratio and pruning
trace the network at 64x64 (``segmenter.SENSITIVITY_RATIOS``, ``segmenter.PRUNE_INPUT_SHAPE``,
set when the page imports paddlex_seg); the code on the pages runs unchanged.

Besides running code, the tests check that relative links in docs/*.md and README.md
point at files (and headings) that exist, that docs/README.md indexes every page and
notebook, that the signatures the pages print equal the code's, and that docs/cli.md
documents every sub-command and option of ``paddlex_seg`` and its commands run.
"""
import dataclasses
import glob
import inspect
import os
import re
import shlex
import sys
import time
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(DOCS, "*.md")))
NOTEBOOKS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "examples", "*.ipynb")))

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[ \t]*(?P<info>[^`]*)$")


@dataclasses.dataclass
class Block:
    lang: str
    info: str
    line: int      # 1-based line number of the block's first code line
    code: str

    @property
    def runs(self):
        return self.lang == "python" and "no-run" not in self.info.split()


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def fenced_blocks(text):
    """The fenced code blocks of a markdown text, in order."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and set(lines[j].strip()) == {fence[0]}):
            # Code inside a list item is indented like the fence.
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        blocks.append(Block(opening["lang"].lower(), opening["info"].strip(), i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def without_fences(text):
    """The text with the lines of fenced blocks (fences included) blanked."""
    lines = text.splitlines()
    for block in fenced_blocks(text):
        for k in range(block.line - 2, block.line - 1 + block.code.count("\n") + 1):
            if 0 <= k < len(lines):
                lines[k] = ""
    return "\n".join(lines)


def prose(text):
    """The text without fenced blocks and inline code (where links are not links)."""
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", without_fences(text), flags=re.S)


# --- code blocks run, each page in a fresh process ------------------------------------
# Line 1 of every page script (a markdown page's line 1 is its title, never code): the
# speed settings, applied when the page itself imports paddlex_seg.segmenter, so the
# page's own imports run in the order it prints them.
PRELUDE = '''\
"""Test speed settings for a docs page run (tests/test_docs.py); the page imports what it needs."""
import importlib.abc, importlib.util, os, sys

os.environ.setdefault("MPLBACKEND", "Agg")


class _FastCompression(importlib.abc.MetaPathFinder):
    """Sensitivity over one ratio and pruning traced at 64x64, as soon as the page imports paddlex_seg."""

    def find_spec(self, name, path, target=None):
        if name != "paddlex_seg.segmenter":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.SENSITIVITY_RATIOS = (0.3,)
            module.PRUNE_INPUT_SHAPE = [1, 3, 64, 64]

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _FastCompression())
'''

PAGE_TIMEOUT = 600  # seconds for a whole page; each page takes well under two minutes on 2 cores


def _cli_line_code(line, indent=""):
    """A ``paddlex_seg ...`` shell line as python that runs it (``compress`` is only parsed:
    the whole pipeline is too slow here, tests/slim/test_compress.py runs it; so is ``serve``,
    which serves until stopped, tests/deploy/test_serve.py runs it)."""
    argv = shlex.split(line)[1:]
    if "--help" in argv:
        return ""
    if argv[0] in ("compress", "serve"):
        return f"{indent}__import__('paddlex_seg.cli').cli.build_parser().parse_args({argv!r})"
    message = f"`paddlex_seg {shlex.join(argv)}` failed (stderr above)"
    return f"{indent}assert __import__('paddlex_seg.cli').cli.main({argv!r}) == 0, {message!r}"


def page_script(text):
    """The page as one python script: its python blocks in order, each at the lines it has in
    the page (so tracebacks name page lines), and its bash blocks' ``paddlex_seg`` command
    lines run through the CLI at their place. Line 1 imports the prelude."""
    lines = ["import _docs_prelude  # tests/test_docs.py: speed settings, nothing else"]
    blocks = []
    for block in fenced_blocks(text):
        if block.lang == "python" and block.runs:
            code = block.code.splitlines()
        elif block.lang == "bash" and "no-run" not in block.info.split():
            code = []
            for line in block.code.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                code.append(_cli_line_code(line) if line.startswith("paddlex_seg ") else "")
            # continuation lines were joined: keep the block's line count
            code += [""] * (block.code.count("\n") - len(code))
            if not any(code):
                continue
        else:
            continue
        blocks.append(block)
        lines += [""] * (block.line - 1 - len(lines))
        lines += code
    return "\n".join(lines) + "\n", blocks


def run_script(name, text, work, timeout=PAGE_TIMEOUT):
    """Run ``text`` (a markdown document) as a reader would: one fresh python process, in the
    empty folder ``work``; fail naming the document, the block and the process's stderr."""
    script, blocks = page_script(text)
    folder = os.path.dirname(str(work))
    with open(os.path.join(folder, "_docs_prelude.py"), "w", encoding="utf-8") as f:
        f.write(PRELUDE)
    path = os.path.join(folder, name.replace("/", "_") + ".py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               PADDLEX_SEG_HOME=os.path.join(folder, "weights_cache"), MPLBACKEND="Agg")
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, path], cwd=str(work), env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{name} did not finish in {timeout} s; its output so far:\n"
                    f"{(expired.stderr or b'')[-3000:]}", pytrace=False)
    if done.returncode != 0:
        lines = [int(n) for n in re.findall(rf'File "{re.escape(path)}", line (\d+)', done.stderr)]
        where = "before its first block"
        if lines:
            hit = [b for b in blocks if b.line <= lines[-1]]
            where = (f"{hit[-1].lang} block at line {hit[-1].line} (failing line {lines[-1]})" if hit
                     else f"line {lines[-1]}")
        stderr = done.stderr.replace(path, name)
        pytest.fail(f"{name}, {where}: the process exited with {done.returncode}\n\n"
                    f"stderr:\n{stderr[-6000:]}", pytrace=False)
    return done, time.perf_counter() - start


def run_page(page, work):
    return run_script(f"docs/{page}", read(os.path.join(DOCS, page)), work)


def _migration_page_results(work):
    from paddlex_seg.compat import program_file
    assert (work / "output/unet/prune/model.sensi.data").is_file()
    assert program_file(str(work / "inference_model" / "model")), "no exported program"


def _cli_page_results(work):
    from paddlex_seg.compat import program_file
    for model_dir in ("output/fastscnn/best_model", "output/deeplab/best_model"):
        assert (work / model_dir / "model.yml").is_file()
    assert (work / "output/vis").is_dir() and os.listdir(work / "output/vis")
    for infer in ("output/infer", "output/infer_64"):
        assert program_file(str(work / infer / "model")), "no exported program"
    assert (work / "output/infer_onnx/model.onnx").is_file()


# What a page's code must have left behind, beyond its own asserts.
PAGE_RESULTS = {"migrating_from_paddlex.md": _migration_page_results, "cli.md": _cli_page_results}


@pytest.fixture
def work(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_in_a_fresh_process(page, work):
    done, seconds = run_page(page, work)
    PAGE_RESULTS.get(page, lambda work: None)(work)
    print(f"docs/{page}: {seconds:.1f} s")  # shown with pytest -s


def test_readme_example_runs_in_a_fresh_process(work):
    text = read(os.path.join(ROOT, "README.md"))
    section = text.split("\n## Ten lines", 1)[1].split("\n## ", 1)[0]
    example = [b for b in fenced_blocks(section) if b.lang == "python"]
    assert len(example) == 1 and len(example[0].code.splitlines()) <= 12, "the README's short example"
    done, _ = run_script("README.md", text, work)
    from paddlex_seg.compat import program_file
    assert program_file(str(work / "output/infer/model")), "no exported program"
    assert "miou" in done.stdout


def test_migration_page_states_the_one_line_change():
    text = read(os.path.join(DOCS, "migrating_from_paddlex.md"))
    assert "-import paddlex as pdx\n-from paddlex import transforms as T\n" \
           "+import paddlex_seg as pdx\n+from paddlex_seg import transforms as T" in text
    assert "paddlex_seg --export_inference --model_dir=./output/unet/best_model/" in text


def test_block_parser_sees_fences_lines_and_no_run():
    text = "intro\n```python\na = 1\n```\n\n- item\n  ```python no-run\n  b = 2\n  ```\n```bash\nls\n```\n"
    blocks = fenced_blocks(text)
    assert [(b.lang, b.line, b.code, b.runs) for b in blocks] == [
        ("python", 3, "a = 1\n", True), ("python", 8, "b = 2\n", False), ("bash", 11, "ls\n", False)]


def test_a_failing_block_names_page_block_line_and_stderr(tmp_path, monkeypatch, work):
    monkeypatch.setattr(sys.modules[__name__], "DOCS", str(tmp_path))
    (tmp_path / "broken.md").write_text("# x\n\n```python\nvalue = 1\n```\n\ntext\n\n```python\nok = value\n"
                                        "raise KeyError('boom')\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception) as failure:
        run_page("broken.md", work)
    message = str(failure.value)
    assert "docs/broken.md, python block at line 10 (failing line 11): the process exited with 1" in message
    assert 'File "docs/broken.md", line 11' in message and "KeyError: 'boom'" in message


def test_a_page_runs_alone_not_on_what_others_imported(tmp_path, monkeypatch, work):
    """A fresh process: a name this test module has imported is not there for the page."""
    monkeypatch.setattr(sys.modules[__name__], "DOCS", str(tmp_path))
    (tmp_path / "alone.md").write_text("# x\n\n```python\nprint(pytest)\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match="NameError: name 'pytest' is not defined"):
        run_page("alone.md", work)


def test_page_script_keeps_page_lines_and_runs_cli_lines():
    text = ("# t\n```python\na = 1\n```\n```python no-run\nb = 2\n```\n```bash\npip install x\n"
            "paddlex_seg export --model_dir m \\\n  --save_dir s  # note\npaddlex_seg compress --model_dir m\n```\n")
    script, blocks = page_script(text)
    lines = script.splitlines()
    assert [b.line for b in blocks] == [3, 9]
    assert lines[0].startswith("import _docs_prelude") and lines[2] == "a = 1" and "b = 2" not in script
    assert lines[9] == ("assert __import__('paddlex_seg.cli').cli.main(['export', '--model_dir', 'm', "
                        "'--save_dir', 's']) == 0, '`paddlex_seg export --model_dir m --save_dir s` failed (stderr above)'")
    quoted = page_script("# t\n```bash\npaddlex_seg export --fixed_input_shape=[2,2] --save_dir 'a b'\n```\n")[0]
    compile(quoted, "quoted", "exec")  # shell quoting inside the message stays valid python
    assert lines[10] == "__import__('paddlex_seg.cli').cli.build_parser().parse_args(['compress', '--model_dir', 'm'])"


# --- links ----------------------------------------------------------------------------
def heading_anchors(text):
    """GitHub's anchors for the headings of a markdown text."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", without_fences(text).replace("`", ""), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(text):
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose(text))
    targets += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", prose(text), flags=re.M)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, flags=re.I)]


LINKED_FILES = [os.path.join("docs", p) for p in PAGES] + ["README.md"]


@pytest.mark.parametrize("doc", LINKED_FILES)
def test_relative_links_resolve(doc):
    path = os.path.join(ROOT, doc)
    text = read(path)
    broken = []
    for target in relative_links(text):
        file_part, _, anchor = target.partition("#")
        file_path = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(file_path):
            broken.append(f"{target} (no file {os.path.relpath(file_path, ROOT)})")
        elif anchor and file_path.endswith(".md") and anchor not in heading_anchors(read(file_path)):
            broken.append(f"{target} (no heading #{anchor} in {os.path.relpath(file_path, ROOT)})")
    assert not broken, f"{doc} links to what does not exist: " + "; ".join(broken)


def test_link_checker_finds_a_broken_link():
    text = "See [a](missing.md), [b](https://example.org), `[c](also_missing.md)`, [d](#intro).\n# Intro\n"
    assert relative_links(text) == ["missing.md", "#intro"]
    assert heading_anchors("# Models and `train`\n## What differs\n## What differs\n") == {
        "models-and-train", "what-differs", "what-differs-1"}


def test_docs_index_lists_every_page_and_notebook():
    index = read(os.path.join(DOCS, "README.md"))
    linked = {os.path.normpath(os.path.join("docs", t.partition("#")[0])) for t in relative_links(index)}
    missing = [os.path.join("docs", p) for p in PAGES
               if p != "README.md" and os.path.join("docs", p) not in linked]
    missing += [nb for nb in NOTEBOOKS if nb not in linked]
    assert not missing, f"docs/README.md does not link to {missing}"


# --- references match the code --------------------------------------------------------
def _signature(obj, name):
    signature = inspect.signature(obj)
    params = list(signature.parameters.values())
    if params and params[0].name == "self":
        signature = signature.replace(parameters=params[1:])
    return f"{name}{signature}"


def _documented_signatures():
    import paddlex_seg as seg
    from paddlex_seg import deploy, transforms as T
    from paddlex_seg.segmenter import BaseSegmenter

    models = [(getattr(seg, n), n) for n in ("DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN")]
    models += [(BaseSegmenter.evaluate, "evaluate"), (BaseSegmenter.predict, "predict"),
               (BaseSegmenter.save, "save"), (seg.load_model, "load_model"),
               (seg.visualize, "visualize")]
    data = [(seg.SegDataset, "SegDataset"), (seg.make_synthetic_dataset, "make_synthetic_dataset")]
    data += [(getattr(T, n), n) for n in T.__all__
             if inspect.isclass(getattr(T, n)) and n != "Transform"]
    return {
        "models.md": models,
        "training.md": [(BaseSegmenter.train, "train")],
        "deployment.md": [(BaseSegmenter.export, "export"), (deploy.Predictor, "Predictor"),
                          (deploy.Predictor.predict, "predict")],
        "data_format.md": data,
    }


@pytest.mark.parametrize("page", ["models.md", "training.md", "deployment.md", "data_format.md"])
def test_pages_show_the_code_signatures(page):
    text = " ".join(read(os.path.join(DOCS, page)).split())
    stale = [sig for sig in (_signature(obj, name) for obj, name in _documented_signatures()[page])
             if sig not in text]
    assert not stale, f"docs/{page} does not show these signatures as the code has them: {stale}"


def test_models_page_lists_the_published_weights():
    from paddlex_seg.weights import PRETRAINED_WEIGHTS
    text = read(os.path.join(DOCS, "models.md"))
    section = re.split(r"^## ", text.split("\n## Pretrained weights", 1)[1], flags=re.M)[0]
    rows = {key: sorted(n.strip(" `") for n in names.split(","))
            for key, names in re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M)}
    expected = {}
    for key, dataset in PRETRAINED_WEIGHTS:
        expected.setdefault(key, []).append(dataset)
    assert rows == {k: sorted(v) for k, v in expected.items()}, (
        "the pretrained-weights table of docs/models.md differs from paddlex_seg/weights.py")


# --- the command line page --------------------------------------------------------------
def _subcommands():
    from paddlex_seg.cli import build_parser
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: sub for name, sub in action.choices.items()}


def _cli_sections(text):
    """{sub-command: its section of docs/cli.md} from headings '## `paddlex_seg <cmd>`'."""
    parts = re.split(r"^## `paddlex_seg (\w+)`.*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_cli_page_documents_every_command_and_option():
    sections = _cli_sections(read(os.path.join(DOCS, "cli.md")))
    problems = []
    for name, sub in _subcommands().items():
        if name not in sections:
            problems.append(f"no section '## `paddlex_seg {name}`'")
            continue
        options = {s for a in sub._actions for s in a.option_strings if s.startswith("--")} - {"--help"}
        problems += [f"{name}: {o} undocumented" for o in sorted(options)
                     if not re.search(re.escape(o) + r"(?![\w-])", sections[name])]
        # Command lines are checked by parsing them (below); prose must name real options.
        mentioned = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", prose(sections[name])))
        problems += [f"{name}: {o} documented but not an option" for o in sorted(mentioned - options - {"--help"})
                     if o != "--export_inference"]
    assert not problems, "docs/cli.md: " + "; ".join(problems)


def test_cli_page_command_lines_parse():
    from paddlex_seg.cli import build_parser
    for argv in _cli_commands(read(os.path.join(DOCS, "cli.md"))):
        if argv[0] == "--export_inference":  # what main() does with PaddleX's spelling
            argv = ["export"] + argv[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs/cli.md: `paddlex_seg {shlex.join(argv)}` does not parse")


def _cli_commands(text):
    """The `paddlex_seg ...` command lines of the page's bash blocks (continuations joined)."""
    commands = []
    for block in fenced_blocks(text):
        if block.lang != "bash":
            continue
        for line in block.code.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("paddlex_seg "):
                commands.append(shlex.split(line)[1:])
    return commands
