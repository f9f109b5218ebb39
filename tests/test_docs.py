"""The documentation is true: docs code runs, links resolve, references match the code.

Docs convention (every ``docs/*.md`` page):

* each fenced block opened with ```` ```python ```` is executed; a page's blocks run in
  order in one namespace, in a fresh temporary working directory, so a page is
  self-contained (it makes its own data, e.g. ``seg.make_synthetic_dataset('data', ...)``);
* ```` ```python no-run ```` marks the rare block that cannot run here (GPU, internet,
  hours); ```` ```bash ````, ```` ```text ```` and other blocks are not executed;
* a failure names the page, the line of the block's first code line and the exception;
  tracebacks point at lines of the .md file.

To keep this file fast, sensitivity analysis measures one pruning ratio and pruning
traces the network at 64x64 while the pages run (``segmenter.SENSITIVITY_RATIOS``,
``segmenter.PRUNE_INPUT_SHAPE``); the code on the pages runs unchanged.

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
import traceback

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


# --- code blocks run --------------------------------------------------------------------
@pytest.fixture
def isolated_docs_run(tmp_path, monkeypatch):
    """A fresh working directory, fast compression settings, a private weights cache and
    a backbone registry restored afterwards (pages may register their own backbones)."""
    from paddlex_seg import segmenter
    from paddlex_seg.models.backbones import BACKBONES

    try:
        import matplotlib
        matplotlib.use("Agg")
    except ImportError:
        pass
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("PADDLEX_SEG_HOME", str(tmp_path / "weights_cache"))
    monkeypatch.setattr(segmenter, "SENSITIVITY_RATIOS", (0.3,))
    monkeypatch.setattr(segmenter, "PRUNE_INPUT_SHAPE", [1, 3, 64, 64])
    registered = dict(BACKBONES)
    yield work
    BACKBONES.clear()
    BACKBONES.update(registered)


def run_page(page):
    """Run the page's python blocks in order in one namespace; fail naming the block."""
    path = os.path.join(DOCS, page)
    namespace = {"__name__": "__main__"}
    timings = []
    for block in (b for b in fenced_blocks(read(path)) if b.runs):
        # Padding with blank lines makes traceback line numbers those of the .md file.
        code = compile("\n" * (block.line - 1) + block.code, f"docs/{page}", "exec")
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            exec(code, namespace)
        except (Exception, SystemExit) as error:  # SystemExit too: say which block exited
            trace = "".join(traceback.format_exception(error))
            pytest.fail(f"docs/{page}, python block at line {block.line} raised "
                        f"{type(error).__name__}: {error}\n\n{trace}", pytrace=False)
        timings.append((block.line, time.perf_counter() - start, time.process_time() - start_cpu))
    return namespace, timings


def _migration_page_results(namespace):
    assert os.path.isfile("output/unet/prune/model.sensi.data")
    assert namespace["model"].status == "Normal"
    assert os.path.isfile("inference_model/model.pdmodel")


# What a page's code must have left behind, beyond its own asserts.
PAGE_RESULTS = {"migrating_from_paddlex.md": _migration_page_results}


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, isolated_docs_run):
    namespace, timings = run_page(page)
    PAGE_RESULTS.get(page, lambda namespace: None)(namespace)
    if timings:  # shown with pytest -s
        print(f"docs/{page}: {len(timings)} python blocks, {sum(t[1] for t in timings):.1f} s wall, "
              f"{sum(t[2] for t in timings):.1f} s CPU (this process); per block: "
              + ", ".join(f"line {line} {wall:.1f} s" for line, wall, _ in timings))


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


def test_a_failing_block_names_page_and_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "DOCS", str(tmp_path))
    (tmp_path / "broken.md").write_text("# x\n\n```python\nvalue = 1\n```\n\ntext\n\n```python\nok = value\n"
                                        "raise KeyError('boom')\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception) as failure:
        run_page("broken.md")
    message = str(failure.value)
    assert "docs/broken.md, python block at line 10 raised KeyError" in message
    assert 'File "docs/broken.md", line 11' in message


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


def test_cli_page_commands_run(isolated_docs_run, capsys):
    """The page's python blocks make its data; then each command line runs, in order.

    ``compress`` lines are only parsed: the whole pipeline is too slow for this file
    (tests/slim/test_compress.py runs it); so are ``serve`` lines, which serve until
    stopped (tests/deploy/test_serve.py runs the server)."""
    from paddlex_seg.cli import build_parser, main
    run_page("cli.md")
    commands = _cli_commands(read(os.path.join(DOCS, "cli.md")))
    assert len(commands) >= 6
    for argv in commands:
        if "--help" in argv:
            continue
        if argv[0] in ("compress", "serve"):  # serve would not return
            build_parser().parse_args(argv)
            continue
        status = main(argv)
        assert status == 0, f"docs/cli.md: `paddlex_seg {shlex.join(argv)}` exited with {status}: " \
                            f"{capsys.readouterr().err[-2000:]}"
