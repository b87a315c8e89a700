"""nbs/run.ipynb under papermill, as a user runs it: the quick embedded run on the packaged tiny-mnist backbone."""
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_quick_run_notebook_completes_and_reports(tmp_path):
    out_nb, run = tmp_path / 'out.ipynb', tmp_path / 'run'
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    subprocess.run([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'run.ipynb'), str(out_nb), '-p', 'quick', 'True',
                    '-p', 'out_dir', str(run), '--cwd', str(tmp_path)], check=True, env=env, capture_output=True)
    printed = ''.join(''.join(o.get('text', '')) for c in json.loads(out_nb.read_text())['cells']
                      for o in c.get('outputs', []) if c['cell_type'] == 'code')
    for method in ('random_real', 'mode_discovery_only', 'unguided', 'mgd3_no_stop', 'mgd3'):
        assert method in printed
    assert 'paper reports no number for mnist5k' in printed
    man = json.loads((run / 'manifest.json').read_text())
    assert man['status'] == 'complete' and man['config']['quick'] is True and man['config']['backbone'] == 'tiny-mnist'
    metrics = json.loads((run / 'metrics.json').read_text())['methods']
    # real tiny-mnist samples are digits: every method trains a ConvNet-3 far above chance (10%) in the quick preset
    assert all(m['accuracy']['convnet3']['mean'] > 30 for m in metrics.values()), metrics
    assert {'samples.png', 'modes.png', 'accuracy.png'} <= {p.name for p in (run / 'figures').iterdir()}
