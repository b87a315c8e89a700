"""Run by .ci/run with a fresh virtual environment's Python, from a folder outside the checkout, after
`pip install dist/mgd3-*.whl`: the installed wheel (not the checkout) runs the quick embedded benchmark on its packaged
weights, and carries the class lists and the run notebook; the `mgd3` console script it installs runs and exports
the quick run's set.

    python .ci/wheel_smoke.py OUT_DIR [--checks-only]   # --checks-only: the package checks, not the quick run
"""
import ast, json, re, subprocess, sys, time
from importlib import metadata
from pathlib import Path

out = Path(sys.argv[1]).resolve()
assert sys.prefix != sys.base_prefix, f"not in a virtual environment: {sys.prefix}"
assert Path.cwd().resolve() not in Path(__file__).resolve().parents, "run this from outside the checkout"

import mgd3
pkg, env = Path(mgd3.__file__).resolve().parent, Path(sys.prefix).resolve()
assert env in pkg.parents, f"mgd3 was imported from {pkg}, not from the virtual environment {env}"
assert 'site-packages' in pkg.parts, pkg
print('mgd3', mgd3.__version__, 'from', pkg)

# what the wheel must carry besides the code
assets = pkg/'assets'
for rel in ('tiny-mnist/model_index.json', 'tiny-mnist/transformer/diffusion_pytorch_model.safetensors',
            'tiny-mnist/vae/diffusion_pytorch_model.safetensors', 'tiny-mnist/scheduler/scheduler_config.json',
            'teacher-mnist5k/model.safetensors', 'teacher-mnist5k/config.json'):
    assert (assets/rel).is_file(), f"the wheel lacks mgd3/assets/{rel}"
for name in ('imagenette', 'imagewoof', 'imageidc', 'imagenet100'):
    assert len(mgd3.read_class_list(name)) >= 10, name
assert mgd3.BACKBONES['tiny-mnist']()['source'] == assets/'tiny-mnist'

# the parameterised run notebook ships as mgd3/run.ipynb; its parameters cell defines every DistillConfig parameter
nb = json.loads((pkg/'run.ipynb').read_text(encoding='utf-8'))
cell = next(c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', []))
ns = {}
exec(''.join(cell['source']), ns)
params = {k: ns[k] for k in mgd3.DistillConfig.defaults()}
mgd3.DistillConfig.from_params(**{**params, 'out_dir': str(out/'nb-params')})
assert (pkg/'sweep.ipynb').is_file(), "the wheel lacks mgd3/sweep.ipynb (the parameterised sweep)"

# every third-party package that mgd3 (or its run notebook) imports is declared: module-level imports in the core
# requirements, imports inside functions (and the notebook's) in the core or an extra
def _norm(name): return re.sub(r'[-_.]+', '-', name).lower()
declared = {}   # distribution -> set of extras ('' for core)
for req in metadata.requires('mgd3') or []:
    extra = re.search(r'extra\s*==\s*["\']([^"\']+)', req)
    declared.setdefault(_norm(re.match(r'[A-Za-z0-9._-]+', req).group()), set()).add(extra.group(1) if extra else '')
dists = metadata.packages_distributions()
def _imports(tree, top_only):
    body = tree.body if top_only else ast.walk(tree)
    for node in body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        yield from (n.split('.')[0] for n in names)
def _third_party(mod): return mod not in sys.stdlib_module_names and mod not in ('mgd3', '__future__')
problems, sources = [], {f: ast.parse(f.read_text(encoding='utf-8')) for f in sorted(pkg.glob('*.py'))}
for name in ('run.ipynb', 'sweep.ipynb'):
    cells = json.loads((pkg/name).read_text(encoding='utf-8'))['cells']
    sources[pkg/name] = ast.parse('\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'code'))
for f, tree in sources.items():
    top = set(_imports(tree, True)) if f.suffix == '.py' else set()
    for mod in filter(_third_party, set(_imports(tree, False))):
        owners = {_norm(d) for d in dists.get(mod, [])}
        have = set().union(*(declared.get(d, set()) for d in owners)) if owners else set()
        if not have: problems.append(f"{f.name} imports {mod} ({', '.join(owners) or 'not installed'}): not declared")
        elif mod in top and '' not in have:
            problems.append(f"{f.name} imports {mod} at module level, but it is only in the extras {sorted(have)}: "
                            "declare it as a core requirement")
assert not problems, '\n'.join(problems)
print('declared:', ', '.join(d + ('' if '' in e else f" [{','.join(sorted(e))}]") for d, e in sorted(declared.items())))

# the console script the wheel declares (entry point mgd3 = mgd3.cli:main), as pip wrote it into the venv's bin/
exe = Path(sys.executable).parent/'mgd3'
assert exe.is_file(), f"the wheel did not install the console script {exe}"
def mgd3_cmd(*args):
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"mgd3 {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout
assert mgd3_cmd('--version').strip() == f'mgd3 {mgd3.__version__}'
assert '(paper: 0.1) (default: 0.1)' in ' '.join(mgd3_cmd('distill', '--help').split())
assert json.loads(mgd3_cmd('distill', '--quick', '--print-config'))['quick'] is True
print('console script:', exe)
if '--checks-only' in sys.argv: sys.exit(0)

t0 = time.time()
result = mgd3.distill(quick=True, out_dir=str(out/'quick'))
print(result.table)
man = json.loads((out/'quick'/'manifest.json').read_text())
assert man['status'] == 'complete' and man['config']['backbone'] == 'tiny-mnist', man['status']
acc = {k: v['accuracy'] for k, v in result.metrics['methods'].items()}
assert acc and all(a['mean'] > 30 for m in acc.values() for a in m.values()), acc   # far above chance (10 %)
print(f"quick embedded run from the wheel: {time.time() - t0:.0f} s")

# the installed command exports the run's set; the folder and the pack load back with their metadata
dest = out/'export'/'mnist5k-mgd3'
assert mgd3_cmd('export', out/'quick', '--method', 'mgd3', '--dest', dest).strip() == str(dest)
for where in (dest, dest/'distilled.safetensors'):
    s = mgd3.load_distilled(where)
    assert len(s.rows) == len(s.labels) == man['config']['ipc'] * 10 and s.info['method'] == 'mgd3', where
print('exported by the installed mgd3 command:', dest)
