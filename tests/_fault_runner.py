"""Fault-injection runner for tests/test_faults.py and tests/test_determinism.py (run as a subprocess).

It imports mgd3 once, then forks one child per run of a tiny embedded `distill()`: two uninterrupted reference runs,
and one run folder driven through a chain of faults (SIGKILL at chosen points, a disk-full error, a file in the way
of a class folder), each followed by a check of every file left behind, then resumed. A JSON report goes to stdout."""
import errno, json, os, signal, sys, time, traceback
from pathlib import Path

def check_files(out:Path) -> dict:
    "Open every file a reader could take for data; list leftover temporaries (dot-prefixed, '.tmp')."
    from PIL import Image
    from safetensors.torch import load_file
    bad, tmp = [], []
    for p in sorted(out.rglob('*')):
        if not p.is_file(): continue
        if p.name.startswith('.') and p.suffix == '.tmp': tmp.append(str(p.relative_to(out))); continue
        try:
            if p.suffix == '.png':
                with Image.open(p) as im: im.load()
            elif p.suffix == '.json': json.loads(p.read_text())
            elif p.suffix == '.safetensors': load_file(str(p))
        except Exception as e: bad.append(f"{p.relative_to(out)}: {type(e).__name__}: {e}")
    return {'bad': bad, 'tmp': tmp}

def _count(out, pattern): return len(list(out.glob(pattern)))

def evidence(out:Path) -> dict:
    "Where the run stood: files per stage, and the stages the manifest records as finished."
    import hashlib
    m = out / 'manifest.json'
    man = json.loads(m.read_text()) if m.exists() else {}
    timings, images = sorted(man.get('timings', {})), man.get('images') or None
    return {'shards': _count(out, 'latents/*/class_*.safetensors'), 'modes': _count(out, 'modes/*.safetensors') + _count(out, 'modes.safetensors') > 0,
            'png_mdo': _count(out, 'images/mode_discovery_only/*/*.png'),
            'done_mdo': (out / 'images/mode_discovery_only/done.json').exists(),
            'png_mgd3': _count(out, 'images/mgd3/seed0/*/*.png'), 'evals': _count(out, 'eval/*/*/*.json'),
            'metrics': (out / 'metrics.json').exists(), 'figures': _count(out, 'figures/*.png'), 'finished': timings,
            'images': images and hashlib.sha256(json.dumps(images, sort_keys=True).encode()).hexdigest()}

def _kill_self(): os.kill(os.getpid(), signal.SIGKILL)

def _on_call(obj, name, n, action, when=lambda *a, **k: True):
    "Replace obj.name so that its n-th qualifying call runs `action(args)` first."
    orig, seen = getattr(obj, name), [0]
    def wrapper(*a, **k):
        if when(*a, **k):
            seen[0] += 1
            if seen[0] == n: action(*a, **k)
        return orig(*a, **k)
    setattr(obj, name, wrapper)

def _png_save_hook(n, folder, action):
    "On the n-th PIL save of a PNG under images/<folder>/: `action(self, fp)` (e.g. half a file, then SIGKILL)."
    from PIL import Image
    orig, seen = Image.Image.save, [0]
    def save(self, fp, *a, **k):
        if isinstance(fp, (str, os.PathLike)) and f'/images/{folder}/' in str(fp):
            seen[0] += 1
            if seen[0] == n: action(self, fp)
        return orig(self, fp, *a, **k)
    Image.Image.save = save

def _half_png_then_kill(img, fp):
    import io
    buf = io.BytesIO(); img.copy().save(buf, format='PNG')
    Path(fp).write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2]); _kill_self()

def _disk_full(img, fp): raise OSError(errno.ENOSPC, 'No space left on device')

def install(fault:str):
    "Install the hook of one fault in this (child) process."
    import mgd3, mgd3.latents, mgd3.modes, mgd3.sampler, mgd3.evaluate
    distill_module = sys.modules['mgd3.distill']   # (`mgd3.distill` is the function)
    if fault == 'kill-encoding':      # class 1 of 10 (class 0's shard is written: 13 batches, both orientations)
        _on_call(mgd3.latents, 'encode_latents', 40, lambda *a, **k: _kill_self())
    elif fault == 'kill-modes':       # k-means of class 3
        mgd3.modes.register_mode_method('kmeans')(_wrap_nth(mgd3.modes.get_mode_method('kmeans'), 4))
    elif fault == 'kill-png-real':    # the 5th PNG of mode_discovery_only: half written, then killed
        _png_save_hook(5, 'mode_discovery_only', _half_png_then_kill)
    elif fault == 'kill-sampling':    # the 2nd DDPM step of mgd3's images
        _on_call(mgd3.sampler, 'ddpm_guided_step', 2, lambda *a, **k: _kill_self())
    elif fault == 'kill-png-generated':   # the 5th generated PNG: half written, then killed
        _png_save_hook(5, 'mgd3', _half_png_then_kill)
    elif fault == 'disk-full':        # the 3rd generated PNG of this run fails with ENOSPC
        _png_save_hook(3, 'mgd3', _disk_full)
    elif fault == 'kill-evaluation':  # inside the training loop of the 2nd evaluation (its first augmented batch)
        calls = [0]; orig_eval = distill_module.evaluate
        def ev(*a, **k):
            calls[0] += 1
            if calls[0] == 2: _on_call(sys.modules['mgd3.evaluate'], 'augment_batch', 1, lambda *a, **k: _kill_self())
            return orig_eval(*a, **k)
        distill_module.evaluate = ev
    elif fault not in ('none', 'external-kill', 'blocked-class-folder'): raise ValueError(f"unknown fault {fault!r}")

def _wrap_nth(fn, n):
    seen = [0]
    def wrapped(*a, **k):
        seen[0] += 1
        if seen[0] == n: _kill_self()
        return fn(*a, **k)
    return wrapped

def start(params:dict, fault:str, log:Path) -> int:
    "Fork a child that runs distill(**params) with `fault` installed; returns its pid."
    pid = os.fork()
    if pid: return pid
    code = 0
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND); os.dup2(fd, 1); os.dup2(fd, 2)
        import mgd3
        install(fault)
        mgd3.distill(**params)
    except BaseException as e:
        Path(str(log) + '.error.json').write_text(json.dumps({'type': type(e).__name__, 'message': str(e),
                                                              'errno': getattr(e, 'errno', None),
                                                              'traceback': traceback.format_exc()}))
        code = 3
    finally: os._exit(code)

def wait(pid, out:Path|None=None, kill_when=None) -> dict:
    "Wait for a child; with `kill_when(evidence)`, SIGKILL it from here as soon as that holds."
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done: break
        if kill_when is not None and kill_when(evidence(out)): os.kill(pid, signal.SIGKILL); kill_when = None
        time.sleep(0.01)
    return {'signal': os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            'exit': os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}

CHAIN = ['kill-encoding', 'kill-modes', 'kill-png-real', 'kill-sampling', 'kill-png-generated', 'disk-full',
         'blocked-class-folder', 'kill-evaluation', 'external-kill', 'none']

def main(work:Path, pipe:str, chain:list[str], refs:list[str]):
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from mgd3.testing import TINY_RUN
    params = lambda name: dict(TINY_RUN, backbone=pipe, out_dir=str(work / name), methods=('mode_discovery_only', 'mgd3'))
    t0 = time.time(); report = {'steps': []}
    refs = {n: start(params(n), 'none', work / f'{n}.log') for n in refs}   # uninterrupted, in parallel with the chain
    out = work / 'chain'
    for i, fault in enumerate(chain):
        log = work / f'chain-{i}-{fault}.log'
        step = {'fault': fault, 'before': evidence(out) if out.exists() else None}
        if fault == 'blocked-class-folder':   # a file where a class folder of mgd3's images must be created
            blocker = out / 'images/mgd3/seed0/9'
            blocker.parent.mkdir(parents=True, exist_ok=True); blocker.write_text('in the way')
        kill_when = (lambda ev: 'evaluate/mgd3' in ev['finished'] and not ev['metrics']) if fault == 'external-kill' else None
        step.update(wait(start(params('chain'), fault, log), out, kill_when))
        err = Path(str(log) + '.error.json')
        step['error'] = json.loads(err.read_text()) if err.exists() else None
        step['after'] = evidence(out); step['files'] = check_files(out)
        if fault == 'blocked-class-folder': blocker.unlink()   # "fix" it: the next run resumes
        report['steps'].append(step)
    for n, pid in refs.items(): report[n] = wait(pid) | {'files': check_files(work / n), 'after': evidence(work / n)}
    report['seconds'] = round(time.time() - t0, 1)
    print(json.dumps(report))

if __name__ == '__main__':
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3].split(','), sys.argv[4].split(','))

# ---------------------------------------------------------------- used by the tests (in the pytest process)
import functools

@functools.lru_cache(maxsize=None)
def fault_report(with_second_reference:bool=False) -> tuple[dict, Path]:
    "Run this script once per test session (and per option); returns (report, work folder)."
    import atexit, shutil, subprocess, tempfile
    from mgd3.testing import tiny_mnist_pipeline
    work = Path(tempfile.mkdtemp(prefix='mgd3-faults-')); atexit.register(shutil.rmtree, work, True)
    pipe = tiny_mnist_pipeline(work / 'pipe')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg',
           'PYTHONPATH': os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get('PYTHONPATH', '')])}
    refs = 'ref_a,ref_b' if with_second_reference else 'ref_a'
    r = subprocess.run([sys.executable, __file__, str(work), str(pipe), ','.join(CHAIN), refs], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]), work
