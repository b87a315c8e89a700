"""Issue 8, determinism: identical image bytes across batch sizes (1, 7, 32) and process counts (1, 2), and an
identical metrics.json for two runs of the same tiny distill config in different out_dirs."""
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
import mgd3
from mgd3.sampler import ImageJob, generate_to_folder
from mgd3.testing import tiny_mnist_pipeline
from _fault_runner import fault_report

@pytest.fixture(scope='module')
def pipe(tmp_path_factory): return tiny_mnist_pipeline(tmp_path_factory.mktemp('det') / 'pipe')

JOBS = [ImageJob(f'c{c}', k, c, mgd3.item_seed(0, c, k, 'noise')) for c in range(10) for k in range(4)]   # 40 images

def _write(pipe, folder, batch_size, distributed=False):
    bb = mgd3.load_backbone(pipe, device='cpu')
    modes = torch.randn(len(JOBS), 4, 8, 8, generator=torch.Generator().manual_seed(5))
    generate_to_folder(bb, folder, JOBS, modes, distributed=distributed, num_inference_steps=4, stop_t=2,
                       batch_size=batch_size, chunk_size=4, progress=False)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob('*.png'))}

def test_image_bytes_do_not_depend_on_batch_size(pipe, tmp_path):
    runs = {bs: _write(pipe, tmp_path / f'bs{bs}', bs) for bs in (1, 7, 32)}
    assert len(runs[1]) == 40 and runs[1] == runs[7] == runs[32]

def test_image_bytes_do_not_depend_on_process_count(pipe, tmp_path):
    "One process vs two under torchrun (as tests/test_sampler.py does for a 3-channel DiT), same bytes."
    script = tmp_path / 'gen.py'
    script.write_text(textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_determinism import _write
        _write(sys.argv[2], sys.argv[1], 7, distributed=True)
    """))
    env = {**os.environ, 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get('PYTHONPATH', '')])}
    # both runs with one thread per process: the CPU kernels' reduction order depends on the thread count (2 threads
    # vs 1 changed 2 of 40 images here), so the thread count is part of the numeric environment, like the hardware
    subprocess.run([sys.executable, str(script), str(tmp_path / 'one'), str(pipe)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29541',
                    str(script), str(tmp_path / 'two'), str(pipe)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    read = lambda d: {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*.png'))}
    one, two = read(tmp_path / 'one'), read(tmp_path / 'two')
    assert len(two) == 40 and two == one

def _metrics(work, name): return json.loads((work / name / 'metrics.json').read_text())

def test_metrics_identical_for_the_same_config():
    "The resumed (fault-injected) run and an uninterrupted one, same config, different out_dirs: same metrics.json."
    report, work = fault_report()
    a, b = _metrics(work, 'ref_a'), _metrics(work, 'chain')
    assert set(a['methods']) == {'mode_discovery_only', 'mgd3'}
    assert json.dumps(a['methods'], sort_keys=True) == json.dumps(b['methods'], sort_keys=True)
    assert a == b

@pytest.mark.slow
def test_metrics_identical_for_two_clean_runs():
    "Two uninterrupted runs of the same config (no resume in between): same metrics.json and image hashes."
    report, work = fault_report(with_second_reference=True)
    assert _metrics(work, 'ref_a') == _metrics(work, 'ref_b')
    ma, mb = (json.loads((work / n / 'manifest.json').read_text()) for n in ('ref_a', 'ref_b'))
    assert ma['images'] == mb['images']
