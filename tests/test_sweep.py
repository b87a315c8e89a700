"""mgd3.sweep on a tiny random backbone: shared stage 1, resumption point by point, the table, `select` without the
test split, and nbs/sweep.ipynb under papermill (the sweep in CI on a tiny grid, quick settings)."""
import json, os, subprocess, sys, warnings
from pathlib import Path
import pytest
import mgd3
import mgd3.data
from mgd3.sweep import sweep, select, sweep_table, validation_data
from mgd3.testing import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]

def _base(pipe):
    return {**TINY_RUN, 'backbone': str(pipe), 'methods': ['mgd3'], 'num_inference_steps': 2, 'stop_t': 0}

@pytest.fixture(scope='module')
def finished(tiny_mnist_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp('sweep') / 's'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        res = sweep({'mode_guidance_scale': [0.1, 0.3], 'stop_t': [0, 1]}, out, _base(tiny_mnist_pipeline))
    return out, res, caught

def test_shared_modes_are_recorded_as_the_points_own(finished):
    out, _, caught = finished   # a copied-in modes file is no stranger to its run: no "predates recorded hashes"
    assert not [w for w in caught if issubclass(w.category, mgd3.IntegrityWarning)], [str(w.message) for w in caught]
    for p in (q for q in out.iterdir() if (q / 'metrics.json').exists()):
        assert mgd3.Ledger(p).check(p / 'modes' / 'seed0.safetensors') is None

def test_one_row_per_point_and_shared_stage1(finished):
    out, res, _ = finished
    assert [(r['mode_guidance_scale'], r['stop_t']) for r in res.rows] == [(0.1, 0), (0.1, 1), (0.3, 0), (0.3, 1)]
    assert all(r['method'] == 'mgd3' and r['n'] == 1 and 0 <= r['coverage_mean'] <= 1 for r in res.rows)
    assert len(list((out / 'shared' / 'latents').iterdir())) == 1
    assert len(list((out / 'shared' / 'modes').iterdir())) == 1
    caches = {p.resolve() for p in out.glob('*/latents') if p.parent.name != 'shared'}
    assert len(caches) == 1   # every point's latents/ is the one shared folder
    modes = {(p / 'modes' / 'seed0.safetensors').read_bytes() for p in out.iterdir() if (p / 'metrics.json').exists()}
    assert len(modes) == 1
    lines = res.csv.read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith('point,mode_guidance_scale,stop_t,method,net,acc_mean,acc_std')
    assert '| lam0.1-stop0 |' not in res.markdown.read_text() and '| 0.1 | 0 | mgd3 | convnet3 |' in res.markdown.read_text()
    assert {p.name for p in res.figures} == {'acc.png', 'coverage.png'}
    man = json.loads((out / 'lam0.3-stop1' / 'manifest.json').read_text())
    assert man['config']['mode_guidance_scale'] == 0.3 and man['status'] == 'complete'

def test_rerun_resumes_point_by_point(finished, tiny_mnist_pipeline):
    out, res, _ = finished
    stamps = {p: p.stat().st_mtime_ns for p in out.glob('*/metrics.json')}
    again = sweep({'mode_guidance_scale': [0.1, 0.3], 'stop_t': [0, 1]}, out, _base(tiny_mnist_pipeline))
    assert again.rows == res.rows   # a finished sweep is only read: no point ran again
    assert {p: p.stat().st_mtime_ns for p in out.glob('*/metrics.json')} == stamps and len(stamps) == 4
    # a point lost half-way is redone alone, from its own folder
    (out / 'lam0.3-stop0' / 'metrics.json').unlink()
    (out / 'lam0.3-stop0' / 'eval' / 'mgd3' / 'seed0' / 'convnet3.json').unlink()
    before = {p: p.stat().st_mtime_ns for p in out.glob('lam0.1-*/metrics.json')}
    again = sweep({'mode_guidance_scale': [0.1, 0.3], 'stop_t': [0, 1]}, out, _base(tiny_mnist_pipeline))
    assert {p: p.stat().st_mtime_ns for p in out.glob('lam0.1-*/metrics.json')} == before
    assert (out / 'lam0.3-stop0' / 'metrics.json').exists() and len(again.rows) == 4
    assert sweep_table(out).rows == again.rows

def test_parallel_sweep_records_a_failing_point_and_goes_on(tiny_mnist_pipeline, tmp_path):
    "workers=2 (spawned processes, stage 1 made first here): a diverging point is recorded, the others finish."
    grid, out = {'mode_guidance_scale': [0.1, 1e20, 0.3]}, tmp_path / 's'
    with pytest.warns(RuntimeWarning, match='1 of 3 sweep points failed'):
        res = sweep(grid, out, _base(tiny_mnist_pipeline), workers=2, figures=False)
    assert [r['mode_guidance_scale'] for r in res.rows] == [0.1, 0.3]
    assert [r['point'] for r in res.failed] == ['lam1e+20']
    assert res.failed[0]['error'].startswith('SamplingDivergedError: the ddpm sampler produced NaN')
    assert json.loads((out / 'lam1e+20' / 'failed.json').read_text())['type'] == 'SamplingDivergedError'
    assert len(list((out / 'shared' / 'modes').iterdir())) == 1
    assert res.csv.read_text().splitlines()[-1].startswith('lam1e+20,1e+20,mgd3,,')
    # a retried point that succeeds drops its failure record (a stale one stands in for an earlier failure here)
    (out / 'lam0.3' / 'metrics.json').unlink()
    (out / 'lam0.3' / 'failed.json').write_text(json.dumps({'error': 'MemoryError: earlier', 'type': 'MemoryError'}))
    assert [(r['point'], r['error'][:12]) for r in sweep_table(out).failed] == [   # in the grid's order
        ('lam1e+20', 'SamplingDive'), ('lam0.3', 'MemoryError:')]
    with pytest.warns(RuntimeWarning, match='1 of 3 sweep points failed'):
        again = sweep(grid, out, _base(tiny_mnist_pipeline), figures=False)
    assert [r['point'] for r in again.failed] == ['lam1e+20'] and not (out / 'lam0.3' / 'failed.json').exists()
    assert [r['mode_guidance_scale'] for r in again.rows] == [0.1, 0.3]

def test_select_never_reads_the_test_split(tiny_mnist_pipeline, tmp_path, monkeypatch):
    real = mgd3.data.load_mnist5k
    def guarded(split='train'):
        if split == 'test': raise AssertionError('the test split was read')
        return real(split)
    monkeypatch.setattr(mgd3.data, 'load_mnist5k', guarded)
    with pytest.raises(AssertionError, match='the test split was read'):   # the guard works: a test run trips it
        mgd3.distill(**{**_base(tiny_mnist_pipeline), 'out_dir': str(tmp_path / 'test-run')})
    sel = select({'mode_guidance_scale': [0.1, 0.3]}, tmp_path / 'sel', _base(tiny_mnist_pipeline),
                 methods=('mgd3', 'mgd3_adaptive'))
    assert sel.method in ('mgd3', 'mgd3_adaptive') and sel.params['mode_guidance_scale'] in (0.1, 0.3)
    assert len(sel.sweep.rows) == 4 and sel.val_acc == max(r['acc_mean'] for r in sel.sweep.rows)
    man = json.loads((tmp_path / 'sel' / 'lam0.1' / 'manifest.json').read_text())
    assert man['config']['dataset'] == 'mnist5k-val'

def test_select_refuses_data_without_a_validation_split(tmp_path):
    with pytest.raises(ValueError, match='make_holdout_root'):
        validation_data('imagenette', str(tmp_path))
    root = mgd3.make_holdout_root(_tree(tmp_path / 'imagenet'), tmp_path / 'held', mgd3.folder_spec(tmp_path / 'imagenet'),
                                  per_class=1)
    assert validation_data('imagenette', str(root)) == ('imagenette', str(root))

def _tree(root):
    from PIL import Image
    for w in ('a', 'b'):
        (root / 'train' / w).mkdir(parents=True)
        for i in range(3): Image.new('RGB', (8, 8)).save(root / 'train' / w / f'{i}.png')
    return root

def test_sweep_notebook_under_papermill(tiny_mnist_pipeline, tmp_path):
    out_nb, out = tmp_path / 'out.ipynb', tmp_path / 'sweep'
    params = {'grid': {'mode_guidance_scale': [0.1, 0.3]}, 'base': _base(tiny_mnist_pipeline), 'out_dir': str(out)}
    (tmp_path / 'p.yaml').write_text(json.dumps(params))
    subprocess.run([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'sweep.ipynb'), str(out_nb), '-f',
                    str(tmp_path / 'p.yaml'), '--cwd', str(tmp_path)], check=True, capture_output=True,
                   env={**os.environ, 'MPLBACKEND': 'Agg'})
    printed = ''.join(''.join(o.get('text', '')) for c in json.loads(out_nb.read_text())['cells']
                      for o in c.get('outputs', []) if c['cell_type'] == 'code')
    assert '| 0.3 | mgd3 | convnet3 |' in printed
    assert (out / 'table.csv').exists() and (out / 'figures' / 'acc.png').exists()

def test_the_shared_folder_records_every_shared_file(finished):
    "Issue 27 (cheap): the shared stage-1 folder's own ledger holds every shard and mode set, and they verify clean."
    from mgd3.integrity import verify_shared
    out = finished[0]
    shared = out / 'shared'
    files = sorted(p for p in shared.rglob('*') if p.is_file() and p.suffix in ('.safetensors', '.json')
                   and not p.name.startswith('.'))
    recorded = mgd3.Ledger(shared).hashes()
    assert len(files) == 10 + 1 + 1 and {str(p.relative_to(shared)) for p in files} <= set(recorded)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert verify_shared(shared, 'latents', 'modes') == []

@pytest.mark.slow
def test_a_changed_shared_shard_or_mode_set_is_set_aside_and_recomputed(tiny_mnist_pipeline, tmp_path):
    """Issue 27: the shared stage-1 folder keeps its own hash ledger; a sweep reusing it verifies what it reuses.
    Slow (two sweeps); run it with `MGD3_RUN_SLOW=1 python -m pytest -q tests/test_sweep.py -k changed_shared`."""
    base, shared = _base(tiny_mnist_pipeline), tmp_path / 'shared'
    sweep({'mode_guidance_scale': [0.1]}, tmp_path / 'a', base, figures=False, shared=shared)
    shards = sorted((shared / 'latents').rglob('class_*.safetensors'))
    modes = sorted((shared / 'modes').rglob('*.safetensors'))
    assert len(shards) == 10 and len(modes) == 1 and (shared / 'hashes.jsonl').is_file()
    want = {p: p.read_bytes() for p in shards + modes}
    for p in (shards[3], modes[0]):
        b = bytearray(p.read_bytes()); b[-10] ^= 1; p.write_bytes(bytes(b))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        sweep({'mode_guidance_scale': [0.2]}, tmp_path / 'b', base, figures=False, shared=shared)
    said = [str(w.message) for w in caught if issubclass(w.category, mgd3.IntegrityWarning)]
    assert len([m for m in said if 'set aside' in m]) == 2, said
    assert {p: p.read_bytes() for p in shards + modes} == want   # recomputed, byte for byte the first ones
    assert len(list(shared.rglob('.*.rejected'))) == 2
    from mgd3.integrity import verify_shared
    assert verify_shared(shared, *(str(p.relative_to(shared).parent) for p in shards[:1] + modes)) == []
