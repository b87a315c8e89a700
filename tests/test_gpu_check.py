"""benchmarks/gpu_check.sh (the prepared GPU check) runs end to end at toy sizes on the CPU, so that it cannot rot."""
import os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ('### 1. Mode-guided DiT sampling', '### 2. VAE encoding', '### 3. Torch k-means',
            '### 4. Evaluation trainer')

def test_gpu_check_toy_runs_every_section(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / 'out'), CUDA_VISIBLE_DEVICES='', MGD3_GPU_CHECK_TOY='1')
    env.pop('PYTHONPATH', None)
    r = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'gpu_check.sh')], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-4000:]
    md = (tmp_path / 'out' / 'gpu_check.md').read_text()
    for s in ('## GPU check (toy sizes', *SECTIONS, 'Whole check:'): assert s in md, (s, md[-3000:])
    rows = [l for l in md.splitlines() if l.startswith('| ') and not l.startswith('| batch') and '---' not in l]
    assert len(rows) >= 6, md                                    # 2 sampler + 1 vae + 2 kmeans + 1 train rows at least
    assert not any('failed' in l or 'skipped' in l for l in rows), '\n'.join(rows)
    assert 'labels identical' in md                               # batched k-means == one class at a time
    assert '**Section' not in md, md[-3000:]                    # no section failed or hit its cap

def test_gpu_check_rejects_unknown_arguments():
    r = subprocess.run(['bash', str(ROOT / 'benchmarks' / 'gpu_check.sh'), '--fast'], cwd=ROOT, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and 'use --toy' in r.stderr

def test_gpu_check_refuses_full_sizes_without_a_gpu():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHONPATH=str(ROOT))
    env.pop('MGD3_GPU_CHECK_TOY', None)
    r = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'gpu_check.py'), 'kmeans'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'run it with --toy' in r.stdout + r.stderr
