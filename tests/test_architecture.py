"""The package's layers (docs/architecture.md), checked on the import statements of mgd3/*.py, and the method
registry's promise: a new method is one registration, and `distill` runs it with no change."""
import ast, json
from pathlib import Path
import pytest, torch
import mgd3
from mgd3.testing import tiny_mnist_pipeline

PKG = Path(mgd3.__file__).parent
FOUNDATION = {'core'}
EVALUATION = {'evalnets', 'augment', 'protocols', 'evaluate', 'metrics'}
GENERATOR = {'backbone', 'losses', 'pretrain', 'sampler', 'text2img', 'tiny_mnist'}
PIPELINE = {'methods', 'config', 'run', 'distill', 'paper', 'explore', 'export', 'cli', 'sweep', 'candidates'}

def imports() -> dict[str, set[str]]:
    "Module → the mgd3 modules it imports (anywhere in the file, top level or inside functions)."
    out = {}
    for f in sorted(PKG.glob('*.py')):
        if f.name.startswith('_'): continue
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.level: deps.add(node.module.split('.')[0])
                elif node.module.startswith('mgd3.'): deps.add(node.module.split('.')[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split('.')[1] for a in node.names if a.name.startswith('mgd3.')}
        out[f.stem] = deps - {f.stem}
    return out

def test_every_module_is_in_one_layer():
    stages = set(imports()) - FOUNDATION - EVALUATION - GENERATOR - PIPELINE - {'testing'}
    assert stages == {'images', 'data', 'latents', 'modes', 'kmeans'}, stages

def test_core_imports_no_stage():
    assert imports()['core'] == set()

def test_images_import_only_core():
    "The image-set module (decode, crop, stream, write) sits under every reader and writer: it imports only `core`."
    assert imports()['images'] <= {'core'}, imports()['images']

def test_no_stage_imports_the_pipeline():
    bad = {m: d & PIPELINE for m, d in imports().items() if m not in PIPELINE and d & PIPELINE}
    assert not bad, bad

def test_evaluation_imports_neither_sampler_nor_backbones():
    bad = {m: d & GENERATOR for m, d in imports().items() if m in EVALUATION and d & GENERATOR}
    assert not bad, bad

def test_the_sampler_never_imports_evaluation():
    assert not imports()['sampler'] & EVALUATION

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
