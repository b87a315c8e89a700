"""nbs/run.ipynb under papermill, as a user runs it: the quick embedded run on the packaged tiny-mnist backbone."""
import json, os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_quick_run_notebook_completes_and_reports(tmp_path):
    out_nb, run = tmp_path / 'out.ipynb', tmp_path / 'run'
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    live = subprocess.run([sys.executable, '-m', 'papermill', '--log-output', str(ROOT / 'nbs' / 'run.ipynb'), str(out_nb),
                           '-p', 'quick', 'True', '-p', 'out_dir', str(run), '--cwd', str(tmp_path)], check=True, env=env,
                          capture_output=True, text=True)
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

    # issue 27, progress a person sees: one start and one end line (with its duration) per stage of the manifest, in
    # the executed notebook and live on papermill's terminal (--log-output); text bars for sampling and training;
    # after the first trained network, the time left
    stages = list(man['timings'])
    assert {'load', 'encode', 'modes', 'images/mgd3', 'evaluate/mgd3', 'metrics', 'figures'} <= set(stages), stages
    streams = ''.join(''.join(o.get('text', '')) for c in json.loads(out_nb.read_text())['cells']
                      for o in c.get('outputs', []) if o.get('output_type') == 'stream')
    for where in (streams, live.stdout + live.stderr):
        for stage in stages:
            assert len(re.findall(rf"{re.escape(str(run))}: {re.escape(stage)}\n", where)) == 1, stage
            assert len(re.findall(rf"{re.escape(str(run))}: {re.escape(stage)} done in [\d.]+ s\n", where)) == 1, stage
        assert re.search(r"first network trained in \d+ s; about \d+ s left for the other \d+ evaluations", where)
        assert re.search(r"images: 100%\|[^\n\r]*\| \d+/\d+", where), 'no sampling bar'
        assert re.search(r"evaluate: 100%\|[^\n\r]*\| \d+/\d+", where), 'no training bar'
