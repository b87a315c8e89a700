"""Issue 14: nothing is reused blindly, one writer per run, and a disk-space preflight.

The reference is the uninterrupted tiny run that tests/test_faults.py already makes (`fault_report()`'s `ref_a`:
methods mode_discovery_only and mgd3, one seed). Copies of it are corrupted, locked and resumed by real `distill`
processes (one torch thread each, as the reference), and compared with it byte for byte."""
import hashlib, json, os, re, shutil, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path
import pytest
import mgd3
from mgd3.run import Run, RunLock, disk_needed, reused_files
from _fault_runner import fault_report

pytestmark = pytest.mark.skipif(not hasattr(os, 'fork'), reason='the fault runner forks one child per run (POSIX)')

RUNNER = textwrap.dedent('''
    import json, sys, warnings, torch
    torch.set_num_threads(1)
    warnings.simplefilter('always')
    import mgd3
    params = json.loads(sys.argv[1])
    try: r = mgd3.distill(**params)
    except Exception as e:
        print(json.dumps({'error': type(e).__name__, 'message': str(e)}), flush=True)
        sys.exit(3)
    print(json.dumps({'done': str(r.out_dir)}), flush=True)
''')

@pytest.fixture(scope='module')
def ref():
    report, work = fault_report()
    assert report['ref_a']['exit'] == 0
    return work

def _params(work, out, **kw):
    from mgd3.testing import TINY_RUN
    return dict(TINY_RUN, backbone=str(work / 'pipe'), out_dir=str(out), methods=['mode_discovery_only', 'mgd3'], **kw)

def _start(work, out, tmp, name, **kw):
    "A real `distill` process on `out`; its stdout/stderr go to tmp/<name>.out/.err."
    script = tmp / 'runner.py'
    if not script.exists(): script.write_text(RUNNER)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg',
           'PYTHONPATH': os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get('PYTHONPATH', '')])}
    return subprocess.Popen([sys.executable, str(script), json.dumps(_params(work, out, **kw))], env=env,
                            stdout=open(tmp / f'{name}.out', 'w'), stderr=open(tmp / f'{name}.err', 'w'))

def _result(p, tmp, name, timeout=600):
    p.wait(timeout=timeout)
    lines = (tmp / f'{name}.out').read_text().strip().splitlines()
    return p.returncode, (json.loads(lines[-1]) if lines else {}), (tmp / f'{name}.err').read_text()

def _files(folder):
    "sha256 of every file a run reuses, by path (eval records without their wall-clock `seconds`)."
    out = {}
    for p in reused_files(Run.load(folder)):
        rel = str(p.relative_to(folder))
        if rel.startswith('eval/'): out[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k != 'seconds'}
        else: out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out

def _copy(ref, dst):
    shutil.copytree(ref / 'ref_a', dst, ignore=shutil.ignore_patterns('.mgd3.lock*'))
    return dst

def _flip(path, at=None):
    "Flip one bit in the middle of a file (bit rot)."
    b = bytearray(path.read_bytes())
    i = len(b) // 2 if at is None else at
    b[i] ^= 0x10
    path.write_bytes(bytes(b))

# ---------------------------------------------------------------- nothing is reused blindly
CORRUPTIONS = {   # what is done to a finished file of a complete run, and the file the warning must name
    'metrics.json edited (a hand edit)': 'metrics.json',
    'a generated PNG with one bit flipped': 'images/mgd3/seed0/3/1.png',
    'a real-set PNG with one bit flipped (its set loses done.json)': 'images/mode_discovery_only/5/0.png',
    "the real set's done.json, set aside with it": 'images/mode_discovery_only/done.json',
    'a latent shard truncated to half': 'latents/*/class_0004_4.safetensors',
    'the latent cache record edited': 'latents/*/cache.json',
    'an evaluation JSON edited': 'eval/mgd3/seed0/convnet3.json',
    "seed 0's modes with one bit flipped": 'modes/seed0.safetensors',
    'a stray PNG nobody recorded, inside a set': 'images/mgd3/seed0/7/5.png',
    'a figure deleted': 'figures/accuracy.png',
}

def _corrupt(run):
    m = json.loads((run / 'metrics.json').read_text())
    m['methods']['mgd3']['accuracy']['convnet3']['mean'] += 1.0
    (run / 'metrics.json').write_text(json.dumps(m))
    _flip(run / 'images/mgd3/seed0/3/1.png')
    _flip(run / 'images/mode_discovery_only/5/0.png')
    shard = next(run.glob('latents/*/class_0004_4.safetensors'))
    shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
    cache = next(run.glob('latents/*/cache.json'))
    cache.write_text(cache.read_text().replace('"format": 1', '"format": 1 '))
    e = run / 'eval/mgd3/seed0/convnet3.json'
    e.write_text(e.read_text().replace('"best_acc": ', '"best_acc": 1'))
    modes = run / 'modes' / 'seed0.safetensors'   # one ModeSet per generation seed (mode_flips='authors')
    _flip(modes, at=modes.stat().st_size - 10)
    shutil.copy(run / 'images/mgd3/seed0/7/0.png', run / 'images/mgd3/seed0/7/5.png')
    (run / 'figures/accuracy.png').unlink()

def test_corrupted_files_are_reported_recomputed_and_end_byte_identical(ref, tmp_path):
    run = _copy(ref, tmp_path / 'run')
    want = _files(run)
    _corrupt(run)
    code, out, err = _result(_start(ref, run, tmp_path, 'resume'), tmp_path, 'resume')
    assert code == 0, (out, err[-3000:])
    named = [f for f in CORRUPTIONS.values() if not re.search(re.escape(f).replace(r'\*', r'[^/]+') + r' (does not|has '
                                                                r'no|was written|belongs)', err)]
    assert not named, f"no IntegrityWarning names {named}:\n{err[-3000:]}"
    got = _files(run)
    assert got == want, sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    assert not (run / 'images/mgd3/seed0/7/5.png').exists()      # the stray image is not part of the set
    # set aside: metrics, the two PNGs, done.json, the shard, cache.json, the eval record, the modes, the stray PNG
    assert len(list(run.rglob('.*.rejected'))) == 9
    man, ref_man = (json.loads((p / 'manifest.json').read_text()) for p in (run, ref / 'ref_a'))
    assert man['status'] == 'complete' and man['images'] == ref_man['images']
    # and the repaired run is trusted as it is: a second call verifies metrics.json and warns about nothing
    code, out, err = _result(_start(ref, run, tmp_path, 'again'), tmp_path, 'again')
    assert code == 0 and 'IntegrityWarning' not in err
    print(f"corruption cases survived: {len(CORRUPTIONS)}")

def test_a_run_without_recorded_hashes_is_adopted_once(ref, tmp_path):
    "A run folder made before hashes were recorded: its files are taken as they are, with one warning, and recorded."
    run = _copy(ref, tmp_path / 'old')
    (run / 'hashes.jsonl').unlink()
    with pytest.warns(mgd3.IntegrityWarning, match=r"predates recorded hashes: its \d+ finished files"):
        r = mgd3.distill(**_params(ref, run))
    assert r.metrics == json.loads((ref / 'ref_a' / 'metrics.json').read_text())
    assert set(mgd3.Ledger(run).hashes()) == {str(p.relative_to(run)) for p in reused_files(Run.load(run))}
    with warnings.catch_warnings():
        warnings.simplefilter('error', mgd3.IntegrityWarning)
        mgd3.distill(**_params(ref, run))   # recorded now: no warning

def test_every_file_of_a_run_is_recorded_when_written(ref):
    "In the uninterrupted reference, the ledger holds the sha256 of every file a resumed run would reuse."
    run = ref / 'ref_a'
    hashes = mgd3.Ledger(run).hashes()
    files = reused_files(Run.load(run))
    rels = {str(p.relative_to(run)) for p in files}
    tops = {r.split('/')[0] for r in rels}
    assert {'images', 'latents', 'eval', 'figures', 'metrics.json'} <= tops and any(t.startswith('modes') for t in tops)
    assert set(json.loads((run / 'manifest.json').read_text())['images']) <= rels   # every image of the run
    assert rels <= set(hashes)
    assert all(hashes[str(p.relative_to(run))] == mgd3.sha256_file(p) for p in files)
    assert 'manifest.json' not in hashes and not any(k.startswith('.') for k in hashes)

# ---------------------------------------------------------------- one writer per run
def _wait_for(cond, timeout=300, what=''):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout: raise TimeoutError(what)
        time.sleep(0.05)

def _holder(run):
    try: return json.loads((run / '.mgd3.lock.json').read_text())['pid']
    except (OSError, ValueError, KeyError): return None

def test_two_distill_processes_on_one_out_dir(ref, tmp_path):
    "A live writer makes a second distill fail at once (lock='fail'); once it is SIGKILLed, its lock blocks nobody."
    run = _copy(ref, tmp_path / 'run')
    (run / 'metrics.json').unlink()                      # unfinished: the writer has the metrics stage to do
    a = _start(ref, run, tmp_path, 'a')
    _wait_for(lambda: _holder(run) == a.pid, what='the first distill never took the lock')
    os.kill(a.pid, signal.SIGSTOP)                       # it holds the lock, mid-run, for as long as we need
    try:
        t0 = time.time()
        code, out, err = _result(_start(ref, run, tmp_path, 'b', lock='fail'), tmp_path, 'b')
        assert code == 3 and out['error'] == 'RunLockedError', (out, err[-2000:])
        assert re.search(rf"run is being written by another mgd3 run \(pid {a.pid} on .*\); wait for it to finish, "
                         r"pass lock='wait'", out['message'])
        assert time.time() - t0 < 120                    # at once: no stage ran
    finally:
        os.kill(a.pid, signal.SIGKILL)                   # a killed writer: the OS releases its lock
        a.wait()
    assert (run / '.mgd3.lock').exists() and a.returncode == -signal.SIGKILL
    code, out, err = _result(_start(ref, run, tmp_path, 'c', lock='fail'), tmp_path, 'c')
    assert code == 0, (out, err[-2000:])
    assert (run / 'metrics.json').read_bytes() == (ref / 'ref_a' / 'metrics.json').read_bytes()

@pytest.mark.slow   # two real distill processes, one queued (the fail-fast lock test stays in CI)
def test_a_waiting_distill_runs_after_the_writer_finishes(ref, tmp_path):
    run = _copy(ref, tmp_path / 'run')
    (run / 'metrics.json').unlink()
    d = _start(ref, run, tmp_path, 'd')
    _wait_for(lambda: _holder(run) == d.pid, what='the first distill never took the lock')
    os.kill(d.pid, signal.SIGSTOP)
    w = _start(ref, run, tmp_path, 'w', lock='wait')
    _wait_for(lambda: 'waiting for it to finish' in (tmp_path / 'w.err').read_text(), what='no waiting message')
    time.sleep(2)
    assert w.poll() is None                              # still waiting: it did not start a stage
    os.kill(d.pid, signal.SIGCONT)
    code_d, _, err_d = _result(d, tmp_path, 'd')
    code_w, out_w, err_w = _result(w, tmp_path, 'w')
    assert code_d == 0 and code_w == 0, (err_d[-2000:], err_w[-2000:])
    assert re.search(rf"is being written by another mgd3 run \(pid {d.pid} on .*\); waiting for it to finish", err_w)
    assert (run / 'metrics.json').read_bytes() == (ref / 'ref_a' / 'metrics.json').read_bytes()

def test_the_lock_is_released_when_a_run_fails(tmp_path):
    "An error inside the writer (here: another config in the folder) releases the lock at once."
    from mgd3.testing import TINY_RUN
    cfg = mgd3.DistillConfig.from_params(**TINY_RUN, out_dir=str(tmp_path / 'run'))
    with Run.writer(cfg): pass
    with pytest.raises(ValueError, match='holds a run with another config'):
        with Run.writer(mgd3.DistillConfig.from_params(**TINY_RUN | {'ipc': 3}, out_dir=str(tmp_path / 'run'))): pass
    with RunLock(tmp_path / 'run', wait=False): pass
    assert not (tmp_path / 'run' / '.mgd3.lock.json').exists()

# ---------------------------------------------------------------- disk-space preflight
def test_disk_estimate_bounds_what_a_run_writes(ref):
    "The estimate for a fresh run is at least what the reference run wrote, and not wildly more; nothing is left."
    import tempfile
    done = Run.load(ref / 'ref_a')
    with tempfile.TemporaryDirectory() as d:
        fresh = Run.open(mgd3.DistillConfig.from_params(**_params(ref, Path(d) / 'run')))
        need = disk_needed(fresh, (4, 8, 8), (1, 32, 32))
    wrote = {k: sum(p.stat().st_size for p in (ref / 'ref_a' / k).rglob('*') if p.is_file() and p.suffix != '.tmp')
             for k in ('latents', 'images')}
    assert wrote['latents'] <= need['latents'] <= 1.2 * wrote['latents']
    assert wrote['images'] <= need['images'] <= 10 * wrote['images']
    left = disk_needed(done, (4, 8, 8), (1, 32, 32))
    assert left['latents'] == left['images'] == 0
    print(f"disk estimate vs written: latents {need['latents']} vs {wrote['latents']} bytes, images {need['images']} "
          f"vs {wrote['images']} bytes")

def test_a_full_disk_refuses_to_start(ref, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: real(p)._replace(free=3 * 2**20))
    with pytest.raises(OSError, match=r"needs about [\d.]+ MiB \((\d+) bytes\) more .* but 3\.0 MiB \(3145728 bytes\) "
                                      r"is free; free disk space") as info:
        mgd3.distill(**_params(ref, tmp_path / 'run'))
    assert info.value.errno == 28
    assert not (tmp_path / 'run' / 'latents').exists()    # refused before anything was encoded
