"""The documentation stays true: the generated API page is current, the README lists every notebook, links resolve,
and nothing cites files outside the repository."""
import re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md', ROOT / 'BENCHMARKS.md', *sorted((ROOT / 'docs').glob('*.md'))]
# the team's private reference notes are not shipped: the package must explain itself in its own words
OUTSIDE = re.compile(r'digest §|of the digest|diffusers_notes|mgd3_paper\.md|\.\./shared/')


def test_api_page_is_current():
    r = subprocess.run([sys.executable, 'tools/api_doc.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_lists_every_notebook():
    readme = (ROOT / 'README.md').read_text()
    missing = [nb.name for nb in sorted((ROOT / 'nbs').glob('*.ipynb')) if f'nbs/{nb.name}' not in readme]
    assert not missing, f'README.md does not list {missing} in its notebook table'


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    links = re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', doc.read_text())
    broken = [l for l in links if '://' not in l and not l.startswith('mailto:') and not (doc.parent / l).exists()]
    assert not broken, f'{doc.name} links to missing files: {broken}'


def test_no_citation_of_files_outside_the_repository():
    files = [*DOCS, *(ROOT / 'nbs').glob('*.ipynb'), *(ROOT / 'mgd3').glob('*.py')]
    hits = [f'{f.relative_to(ROOT)}: {m.group(0)}' for f in files for m in OUTSIDE.finditer(f.read_text())]
    assert not hits, hits


MODULES = sorted(p for p in (ROOT / 'mgd3').glob('*.py') if p.name != '_modidx.py')


@pytest.mark.parametrize('module', MODULES, ids=lambda p: p.stem)
def test_module_docstring_is_a_whole_sentence(module):
    "Each module's docstring (its notebook's first subtitle line, as nbdev exports it) is a complete sentence."
    import ast
    body = ast.parse(module.read_text()).body   # __init__.py: nbdev writes `__version__` above the docstring
    doc = next((e.value.value for e in body if isinstance(e, ast.Expr) and isinstance(e.value, ast.Constant)
                and isinstance(e.value.value, str)), None)
    assert doc, f'{module.name} has no module docstring: give its notebook a `> subtitle` line'
    assert '\n' not in doc and doc[0].isupper() and doc.endswith('.'), (
        f"{module.name}'s docstring is not one whole sentence ending with a period: {doc!r}; nbdev takes the first "
        "`> ` line of the notebook's title cell, so make that line a sentence of its own")
    assert doc.count('`') % 2 == 0 and doc.count('(') == doc.count(')'), f'{module.name}: unbalanced quoting in {doc!r}'
