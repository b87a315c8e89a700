"""The package's layers and line budgets (`tools/architecture.py`, drawn in docs/architecture.md), checked on the
import statements and sizes of mgd3/*.py, and the method registry's promise: a new method is one registration, and
`distill` runs it with no change."""
import importlib.util, json, subprocess, sys
from pathlib import Path
import torch
import mgd3
from mgd3.testing import tiny_mnist_pipeline

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('architecture', ROOT / 'tools' / 'architecture.py')
A = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(A)
imports = A.imports
layer = lambda name: A.LAYERS[name][0]
GENERATOR, EVALUATION, PIPELINE = layer('generator side'), layer('evaluation side'), layer('pipeline')

def test_the_rules_read_this_package():
    assert A.PKG.resolve() == Path(mgd3.__file__).parent.resolve()

def test_every_module_is_in_one_layer():
    mods = set(imports())
    assert all(A.layer_of(m) for m in mods), [m for m in mods if not A.layer_of(m)]
    named = [m for ms, _ in A.LAYERS.values() for m in ms]
    assert len(named) == len(set(named)), 'a module is named in two layers'
    assert set(named) <= mods, f'layers name modules that do not exist: {set(named) - mods}'

def test_core_imports_no_stage():
    assert imports()['core'] == set()

def test_images_import_only_core():
    "The image-set module (decode, crop, stream, write) sits under every reader and writer: it imports only `core`."
    assert imports()['images'] <= {'core'}, imports()['images']

def test_no_stage_imports_the_pipeline():
    bad = {m: d & PIPELINE for m, d in imports().items() if m not in PIPELINE and m != 'testing' and d & PIPELINE}
    assert not bad, bad

def test_stage_1_imports_no_generator_evaluation_or_pipeline_module():
    bad = {m: d - layer('stage 1') - layer('foundation') for m, d in imports().items() if m in layer('stage 1')}
    assert not any(bad.values()), bad

def test_evaluation_imports_neither_sampler_nor_backbones():
    bad = {m: d & GENERATOR for m, d in imports().items() if m in EVALUATION and d & GENERATOR}
    assert not bad, bad

def test_no_generator_side_module_imports_evaluation():
    bad = {m: d & EVALUATION for m, d in imports().items() if m in GENERATOR and d & EVALUATION}
    assert not bad, bad

def test_no_production_module_imports_the_fixtures():
    bad = [m for m, d in imports().items() if 'testing' in d and m != 'testing']
    assert not bad, bad

def test_every_module_keeps_within_its_line_budget():
    over = {m: (n, A.budget(m)) for m, n in A.lines().items() if n > A.budget(m)}
    assert not over, f'modules over their line budget (lines, budget): {over}; split them by concern'

def test_architecture_page_is_current():
    r = subprocess.run([sys.executable, 'tools/architecture.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_the_checks_catch_a_violation(tmp_path, monkeypatch):
    "Negative control: a generator-side module importing evaluation and `mgd3.testing`, and an oversized module."
    bad = tmp_path / 'mgd3'; bad.mkdir()
    (bad / 'core.py').write_text('x = 1\n')
    (bad / 'sampler.py').write_text('from .evaluate import train_and_eval\nfrom mgd3.testing import TINY_RUN\n'
                                    + 'y = 2\n' * A.BUDGET)
    (bad / 'evaluate.py').write_text('z = 3\n')
    monkeypatch.setattr(A, 'PKG', bad)
    deps = A.imports()
    assert deps['sampler'] == {'evaluate', 'testing'} and deps['core'] == set()
    assert A.lines()['sampler'] > A.budget('sampler')

def test_no_import_cycles():
    g = imports()
    seen, stack = set(), []
    def visit(m):
        if m in stack: raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(m):] + [m])}")
        if m in seen: return
        stack.append(m)
        for d in g.get(m, ()): visit(d)
        stack.pop(); seen.add(m)
    for m in g: visit(m)

def test_a_new_method_is_one_registration(tmp_path):
    "A toy method registered in a few lines runs end to end through `distill`, which names no method."
    @mgd3.register_method('first_real', seeded=False)
    def first_real(ctx, seed, folder):
        "The first IPC real train images of each class."
        if (Path(folder) / 'done.json').exists(): return
        starts = torch.tensor([0] + ctx.cache.counts()[:-1]).cumsum(0)
        mgd3.write_real_set(ctx, (starts[:, None] + torch.arange(ctx.ipc)).flatten(), folder)
    try:
        out = tmp_path / 'run'
        r = mgd3.distill(backbone=str(tiny_mnist_pipeline(tmp_path / 'pipe')), out_dir=str(out), ipc=2, seeds=[0],
                         num_inference_steps=4, stop_t=2, epochs=1, quick=True, methods=['first_real', 'mgd3'])
        assert set(r.metrics['methods']) == {'first_real', 'mgd3'}
        assert len(list((out / 'images' / 'first_real').rglob('*.png'))) == 20
        rows = json.loads((out / 'images' / 'first_real' / 'done.json').read_text())['rows']
        assert rows[:4] == [0, 1, 400, 401]   # mnist5k: 400 train images per class
        assert (out / 'eval' / 'first_real' / 'seed0' / 'convnet3.json').exists()
        assert 'first_real' in r.table
    finally:
        mgd3.DISTILL_METHODS.pop('first_real')
