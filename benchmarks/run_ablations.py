"""Every measurement behind nbs/20_ablations.ipynb and the README's candidate table, as resumable mgd3 sweeps.

On the embedded MNIST-5k benchmark (ConvNet-3, hard labels, the mnist5k preset, generation seeds 0/1/2):
- `<out>/<bb>/bench`: test-split points. The candidate table (the five default methods and every candidate at the
  paper's settings, clamped x̂₀ at λ = 0.2 and 0.3) at IPC 10, 1 and 50; then the IPC-10 ablations: λ, t_stop, the
  mode-discovery method, DDPM vs DDIM.
- `<out>/<bb>/select-ipc<k>`: validation points (dataset `mnist5k-val`: modes and baselines from the `fit` split,
  scores on the held-out `val` split; the test split is never read) for `mgd3.sweep.choose`: λ × t_stop for `mgd3`
  and λ for `mgd3_adaptive`. The chosen setting is then measured on the test split as one more bench point
  (`selected.json` records which).
- `<out>/quality-*.json`: per-class quality of each backbone (`mgd3.quality.measure_per_class`).
- `--train-v2`: trains a longer-trained tiny-mnist (`<out>/tiny-mnist-v2`), measures it beside the current one on
  the validation split, and runs its own bench/select points when its unguided samples train a better network there.

Each point is one `mgd3.distill` run folder, so the script resumes where it stopped; points run in `--workers`
processes in priority order, and `--deadline` stops starting new points (what is unfinished stays resumable).
Usage: python benchmarks/run_ablations.py --out runs/ablations --workers 2            (2 CPU cores: many hours)
       python benchmarks/run_ablations.py --out runs/ablations --workers 14 --train-v2 (one GPU + 16 cores)
       python benchmarks/run_ablations.py --out /tmp/abl --tiny                       (a check of the machinery)"""
import argparse, json, os, sys, time, traceback
from pathlib import Path

PAPER = dict(mode_guidance_scale=0.1, stop_t=25, mode_method='kmeans', sampler='ddpm')
BASELINES = ('mgd3', 'unguided', 'random_real', 'mode_discovery_only', 'mgd3_no_stop')
CANDIDATES = ('mgd3_clip', 'mgd3_adaptive', 'mgd3_matched', 'mgd3_semantic', 'mgd3_select')
IPCS = (10, 1, 50)

def point(ipc, method, **kw):
    "One bench point: the paper's settings, one method (methods of a point run in one process)."
    return {'ipc': ipc, **PAPER, **kw, 'methods': [method]}

def candidate_points(ipc):
    "The candidate table at one IPC: the default methods and the candidates at the paper's settings, then λ 0.2/0.3."
    return ([point(ipc, m) for m in BASELINES + CANDIDATES] +
            [point(ipc, m, mode_guidance_scale=lam) for lam in (0.2, 0.3) for m in ('mgd3_clip', 'mgd3')])

def ablation_points():
    "IPC-10 ablations: λ (with and without stop, clamped), t_stop, mode discovery, DDIM."
    pts = [point(10, m, mode_guidance_scale=lam) for lam in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
           for m in ('mgd3', 'mgd3_no_stop', 'mgd3_clip')]
    pts += [point(10, 'mgd3', stop_t=s) for s in (5, 10, 15, 20, 30, 35, 40, 45)]
    pts += [point(10, 'mgd3', mode_method=mm) for mm in ('kmeans-closest', 'gmm', 'random', 'kmeans-torch')]
    pts += [point(10, m, sampler='ddim') for m in ('unguided', 'mgd3')]
    return pts

def selection_points():
    "The settings `choose` picks from on the validation split."
    pts = [{**PAPER, 'mode_guidance_scale': lam, 'stop_t': st, 'methods': ['mgd3']}
           for lam in (0.05, 0.1, 0.2) for st in (0, 10, 20, 25)]
    return pts + [{**PAPER, 'mode_guidance_scale': lam, 'stop_t': 0, 'methods': ['mgd3_adaptive']}
                  for lam in (0.05, 0.1, 0.2)]

def bench_points(ipcs):
    pts, seen = [], set()
    for p in [q for ipc in ipcs for q in candidate_points(ipc)] + (ablation_points() if 10 in ipcs else []):
        key = json.dumps(p, sort_keys=True)
        if key not in seen: seen.add(key); pts.append(p)
    return pts

# -- work done in worker processes -------------------------------------------------------------------------------
def _init():
    import torch
    torch.set_num_threads(1)

def _noop(): return os.getpid()

def _run_point(point):
    from mgd3.sweep import run_point
    t = time.time()
    run_point(point)
    return time.time() - t

def _train_v2(out, tiny):
    from mgd3.pretrain import DiTConfig, VAEConfig
    from mgd3.tiny_mnist import train_tiny_mnist
    import torch
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    if tiny:
        vc, dc = VAEConfig(block_out_channels=(8, 16, 16), norm_num_groups=4, steps=2), DiTConfig(num_layers=1, steps=2)
    else: vc, dc = VAEConfig(), DiTConfig(steps=6000, checkpoint_every=500)
    t = time.time()
    q = train_tiny_mnist(out, ckpt_dir=str(out) + '-ckpt', vae_cfg=vc, dit_cfg=dc, device=dev, progress=False)
    return {'seconds': time.time() - t, 'quality': q.__dict__, 'device': dev}

def _quality(backbone, split, tiny):
    from mgd3.quality import measure_per_class
    import torch
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    kw = dict(ipc=1, seeds=(0,), samples_per_class=2, epochs=1) if tiny else {}
    return measure_per_class(backbone, split=split, device=dev, **kw).__dict__

# -- the scheduler ----------------------------------------------------------------------------------------------
class Plan:
    "Tasks in priority order, run in a process pool; a point's stage 1 is made here before it is submitted."
    def __init__(self, args):
        from mgd3.sweep import sweep_points, record_points
        self.args, self.out = args, Path(args.out)
        self.record = record_points
        self.sweep_points = sweep_points
        self.queue, self.warmed, self.log = [], set(), []
        self.t0 = time.time()
        self.base = dict(seeds=[0, 1, 2], nets=['convnet3'])
        if args.tiny:
            self.base = dict(seeds=[0], nets=['convnet3'], num_inference_steps=2, epochs=1, quick=True)
        self.ipcs = (2,) if args.tiny else IPCS
        self.selected = {}

    def say(self, msg):
        line = f'[{time.time() - self.t0:7.1f}s] {msg}'
        print(line, flush=True)
        self.log.append(line)

    def bench(self, bb, name):
        pts = bench_points(self.ipcs)
        if self.args.tiny:   # the IPC-10 points at IPC 2, t_stop within the 2 steps, mode methods sampled
            pts = [dict(p, ipc=2, stop_t=min(p['stop_t'], 1)) for p in bench_points((10,))[::3]]
            pts = [dict(t) for t in {json.dumps(p, sort_keys=True): p for p in pts}.values()]
        base = {**self.base, 'backbone': bb}
        points = self.sweep_points(pts, self.out/name/'bench', base, self.out/name/'shared')
        self.record(self.out/name/'bench', points, pts, base)
        return points

    def select(self, bb, name, ipc):
        pts = selection_points()
        if self.args.tiny: pts = [dict(p, stop_t=min(p['stop_t'], 1)) for p in pts[::4]]
        base = {**self.base, 'backbone': bb, 'ipc': ipc, 'dataset': 'mnist5k-val'}
        points = self.sweep_points(pts, self.out/name/f'select-ipc{ipc}', base, self.out/name/'shared')
        self.record(self.out/name/f'select-ipc{ipc}', points, pts, base)
        return points

    def add_points(self, points, priority, tag):
        for i, p in enumerate(points):
            if not p.complete: self.queue.append((priority, len(self.queue), 'point', p, tag))

    def plan_backbone(self, bb, name, first):
        "Queue a backbone's points: candidates by IPC, ablations, then the validation sweeps."
        bench = self.bench(bb, name)
        by_ipc = {ipc: [p for p in bench if p.params['ipc'] == ipc] for ipc in sorted({p.params['ipc'] for p in bench})}
        cand = {json.dumps(c, sort_keys=True) for ipc in self.ipcs for c in candidate_points(ipc)}
        for k, ipc in enumerate(self.ipcs):
            mine = [p for p in by_ipc.get(ipc, []) if self.args.tiny or json.dumps(
                {k2: v for k2, v in p.params.items() if k2 not in self.base and k2 != 'backbone'}, sort_keys=True) in cand]
            self.add_points(mine, first + k, f'{name} candidates ipc{ipc}')
        self.add_points(bench, first + 10, f'{name} bench')   # the rest (ablations); queued duplicates are skipped
        for k, ipc in enumerate(self.ipcs):
            self.add_points(self.select(bb, name, ipc), first + 20 + k, f'{name} select ipc{ipc}')

    def warm(self, p):
        "Stage 1 of a point's modes key, once, in this process."
        from mgd3.sweep import stage1_keys, link_shared, share_modes
        from mgd3.run import Run
        from mgd3.distill import prepare
        from mgd3.core import pick_device
        config = p.config()
        key = stage1_keys(config)[1]
        if key in self.warmed: return
        link_shared(config, p.shared)
        prepare(Run.open(config), pick_device(config.device))
        share_modes(config, p.shared)
        self.warmed.add(key)

def pack(plan, sweeps):
    "Tables and figures of every sweep folder, then the archives under $OUT (if set)."
    from mgd3.sweep import write_results, SweepPoint
    from mgd3.core import load_json
    for d in sweeps:
        if not (d/'sweep.json').exists(): continue
        rec = load_json(d/'sweep.json')
        pts = [SweepPoint(n, p, d/n, d/rec.get('shared', 'shared')) for n, p in rec['points'].items()]
        try: write_results(d, pts, figures=d.name.startswith('select'))
        except Exception: plan.say(f'table of {d} failed: {traceback.format_exc()}')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='runs/ablations')
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--deadline', type=float, default=None, help='seconds after which no new point starts')
    ap.add_argument('--stop', type=float, default=None, help='seconds after which the script packs and exits')
    ap.add_argument('--train-v2', action='store_true')
    ap.add_argument('--v1', default='tiny-mnist', help='the current backbone (name or folder)')
    ap.add_argument('--tiny', action='store_true', help='tiny random backbone, one seed, a few points')
    args = ap.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    os.environ.setdefault('MKL_NUM_THREADS', '1')
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, wait, FIRST_COMPLETED
    from mgd3.sweep import choose, write_results, SweepPoint
    from mgd3.core import save_json
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(args)
    v1 = args.v1
    if args.tiny:
        from mgd3.testing import tiny_mnist_pipeline
        v1 = str(tiny_mnist_pipeline(out/'tiny-pipe'))
    plan.plan_backbone(v1, 'v1', first=10)
    ex = ProcessPoolExecutor(args.workers, mp_context=mp.get_context('spawn'), initializer=_init)
    running = {ex.submit(_noop): ('noop', None, None) for _ in range(args.workers)}
    v2_dir = out/'tiny-mnist-v2'
    if args.train_v2:
        if (v2_dir/'model_index.json').exists() and (out/'train-v2.json').exists(): running[ex.submit(_noop)] = ('noop', None, None)
        else: running[ex.submit(_train_v2, str(v2_dir), args.tiny)] = ('train', None, 'v2')
    quality = {}
    def submit_quality(name, bb):
        for split in ('val', 'test'):
            f = out/f'quality-{name}-{split}.json'
            if f.exists(): quality[(name, split)] = json.loads(f.read_text())
            else: running[ex.submit(_quality, bb, split, args.tiny)] = ('quality', (name, split), None)
    submit_quality('v1', v1)
    if args.train_v2 and (v2_dir/'model_index.json').exists() and (out/'train-v2.json').exists():
        submit_quality('v2', str(v2_dir))
    v2_planned, selections_done = False, set()
    sweeps = {out/'v1'/'bench'} | {out/'v1'/f'select-ipc{i}' for i in plan.ipcs}
    queued = set()
    while True:
        now = time.time() - plan.t0
        if args.stop and now > args.stop:
            plan.say('stop time reached: packing'); break
        # v2: planned once both backbones' validation quality is known and v2 trains better networks there
        if not v2_planned and ('v1', 'val') in quality and ('v2', 'val') in quality:
            a, b = quality[('v1', 'val')]['overall'], quality[('v2', 'val')]['overall']
            go = b['acc_unguided'] > a['acc_unguided']
            plan.say(f"validation: unguided-set top-1 v1 {a['acc_unguided']:.2f}±{a['acc_unguided_std']:.2f}, "
                     f"v2 {b['acc_unguided']:.2f}±{b['acc_unguided_std']:.2f}; fidelity {a['fidelity']:.3f} vs "
                     f"{b['fidelity']:.3f} -> {'measure v2' if go else 'v2 not measured further'}")
            save_json(out/'v2-decision.json', {'v1': a, 'v2': b, 'measure_v2': go})
            if go:
                plan.plan_backbone(str(v2_dir), 'v2', first=13)
                sweeps |= {out/'v2'/'bench'} | {out/'v2'/f'select-ipc{i}' for i in plan.ipcs}
            v2_planned = True
        # a finished validation sweep: choose, and queue the chosen setting on the test split
        for name in ('v1', 'v2'):
            for ipc in plan.ipcs:
                d = out/name/f'select-ipc{ipc}'
                if (name, ipc) in selections_done or not (d/'sweep.json').exists(): continue
                pts = plan.select(v1 if name == 'v1' else str(v2_dir), name, ipc)
                if not all(p.complete for p in pts): continue
                res = write_results(d, pts)
                sel = choose(res)
                bb = v1 if name == 'v1' else str(v2_dir)
                test = {'ipc': ipc, **PAPER, **sel.params, 'methods': [sel.method]}
                if args.tiny: test['stop_t'] = min(test['stop_t'], 1)
                tp = plan.sweep_points([test], out/name/'bench-selected', {**plan.base, 'backbone': bb},
                                       out/name/'shared')
                tp = [SweepPoint(f'ipc{ipc}-selected', tp[0].params, out/name/'bench-selected'/f'ipc{ipc}-selected',
                                 tp[0].shared)]
                plan.record(out/name/'bench-selected', tp)
                save_json(d/'selected.json', {'params': sel.params, 'method': sel.method, 'val_acc': sel.val_acc,
                                              'val_std': sel.val_std, 'test_point': str(tp[0].out_dir)})
                plan.add_points(tp, 5, f'{name} selected ipc{ipc}')
                sweeps.add(out/name/'bench-selected')
                selections_done.add((name, ipc))
                plan.say(f'{name} ipc{ipc}: chose {sel.method} {sel.params} (val {sel.val_acc:.2f}±{sel.val_std:.2f})')
        # submit while there is room
        plan.queue.sort(key=lambda t: (t[0], t[1]))
        deadline = args.deadline and now > args.deadline
        while not deadline and plan.queue and len(running) < args.workers + 2:
            pri, _, kind, p, tag = plan.queue.pop(0)
            if p.complete or str(p.out_dir) in queued: continue
            try: plan.warm(p)
            except Exception:
                plan.say(f'stage 1 of {p.out_dir} failed: {traceback.format_exc()}')
                continue
            queued.add(str(p.out_dir))
            running[ex.submit(_run_point, p)] = ('point', p, tag)
        if not running and (not plan.queue or deadline): break
        done, _ = wait(list(running), timeout=2, return_when=FIRST_COMPLETED)
        for f in done:
            kind, what, tag = running.pop(f)
            try: r = f.result()
            except Exception:
                plan.say(f'{kind} {what if kind != "point" else what.out_dir} failed: {traceback.format_exc()}')
                continue
            if kind == 'train':
                save_json(out/'train-v2.json', r)
                plan.say(f"v2 trained in {r['seconds']:.0f}s on {r['device']}: fidelity {r['quality']['fidelity']:.3f}")
                submit_quality('v2', str(v2_dir))
            elif kind == 'quality':
                save_json(out/f'quality-{what[0]}-{what[1]}.json', r)
                quality[what] = r
                plan.say(f"quality {what}: {r['overall']}")
            elif kind == 'point':
                plan.say(f'{tag}: {what.out_dir.relative_to(out)} in {r:.0f}s')
    pack(plan, sorted(sweeps))
    (out/'log.txt').write_text('\n'.join(plan.log) + '\n')
    left = len([t for t in plan.queue if not t[3].complete])
    plan.say(f'done: {left} points left in the queue, {len(running)} still running')
    for p in list(getattr(ex, '_processes', {}).values()): p.terminate()
    ex.shutdown(wait=False, cancel_futures=True)
    return 0

if __name__ == '__main__':
    sys.exit(main())
