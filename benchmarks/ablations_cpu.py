"""The CPU plan behind nbs/20_ablations.ipynb: resumable mgd3 sweeps on the embedded MNIST-5k benchmark, in priority
order, small enough for 2 CPU cores (the full plan for a GPU machine is benchmarks/run_ablations.py).

Every point is one `mgd3.distill` run (ConvNet-3, hard labels, generation seeds 0/1/2, the paper's settings unless the
point changes them); the sweeps share one stage-1 folder. In order:
1. `ipc1-candidates`: the paper's mgd3, unguided, mgd3_no_stop and every candidate of mgd3.candidates at IPC 1;
   clamped x0 at lambda 0.2 and 0.3, plain mgd3 at lambda 0.2.
2. `ipc10-candidates`: the same at IPC 10, at lambda 0.1 only.
3. `ipc1-ablations`: random real images, the modes alone, mgd3 at lambda 0.05/0.3/1.0 and t_stop 10/40 (IPC 1); at
   lambda 1.0 the sampler diverges (SamplingDivergedError at step 18 of 50): the sweep records it as a failed row.
4. `select-ipc1`: mgd3 over lambda x t_stop and mgd3_adaptive on `mnist5k-val` (the validation split; the test split is
   never read), `mgd3.sweep.choose` picks one (`selected.json`), then `ipc1-selected` measures the choice on the test
   split.
5. `ipc1-more-ablations`: DDIM (unguided and mgd3) and the mode-discovery methods kmeans-closest and random (IPC 1).
6. `ipc10-clip`: clamped x0 at lambda 0.2 and 0.3 (IPC 10).
7. `ipc10-more-ablations`: the paper's Tables 6 and 7 at their own IPC: DDIM (unguided and mgd3) and the mode-discovery
   methods random, kmeans-closest and gmm (IPC 10; at IPC 1 one k-means centroid and one GMM mean are the same point).
8. `ipc50-clip`: clamped x0 at lambda 0.3 and 0.2 (IPC 50; it wins at IPC 10 at both).
9. `ipc50-candidates`: mgd3, mgd3_no_stop, mgd3_adaptive, unguided and every candidate at IPC 50 (about 17 minutes
   per point on one core; mgd3_select generates three candidates per image and costs more).
Stop it any time: rerunning resumes point by point; `--collect` writes the tables of the
points finished so far. `--results DIR` copies each finished sweep's table.csv, table.md
and selected.json into DIR (what the notebook reads).
Usage: OMP_NUM_THREADS=1 nice -n 10 python benchmarks/ablations_cpu.py runs/ablations-cpu \
           --results benchmarks/results/ablations-cpu [--workers 2]"""
import argparse, os, shutil, time
from pathlib import Path
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')
from mgd3.sweep import sweep, choose
from mgd3.core import save_json

out, W, RESULTS = None, 2, None
PAPER = dict(mode_guidance_scale=0.1, stop_t=25, mode_method='kmeans', sampler='ddpm')
BASE = dict(seeds=[0, 1, 2], nets=['convnet3'])
CAND = ['mgd3', 'unguided', 'mgd3_clip', 'mgd3_adaptive', 'mgd3_matched', 'mgd3_semantic', 'mgd3_select']
t0 = time.time()

def say(msg): print(f'[{time.time() - t0:7.1f}s] {msg}', flush=True)

def bench(name, ipc, points):
    say(f'start {name}')
    r = sweep([{**PAPER, **p} for p in points], out/name, {**BASE, 'ipc': ipc}, workers=W, shared=out/'shared')
    say(f'done {name}: {len(r.rows)} rows')
    collect(name)
    return r

def collect(name):
    "Copy a sweep's table and selection into the results folder."
    if RESULTS is None: return
    (RESULTS/name).mkdir(parents=True, exist_ok=True)
    for f in ('table.csv', 'table.md', 'selected.json'):
        if (out/name/f).exists(): shutil.copyfile(out/name/f, RESULTS/name/f)

def m(*names, **kw): return [{'methods': [n], **kw} for n in names]

def selected(tag, ipc):
    "Choose lambda and t_stop (or the adaptive stop) on mnist5k-val, then measure the choice on the test split."
    say(f'start select-{tag}')
    pts = ([{**PAPER, 'methods': ['mgd3'], 'mode_guidance_scale': lam, 'stop_t': st}
            for lam in (0.05, 0.1, 0.2) for st in (0, 25)]
           + [{**PAPER, 'methods': ['mgd3_adaptive'], 'mode_guidance_scale': 0.1, 'stop_t': 0}])
    res = sweep(pts, out/f'select-{tag}', {**BASE, 'ipc': ipc, 'dataset': 'mnist5k-val'}, workers=W,
                shared=out/'shared')
    sel = choose(res)
    save_json(out/f'select-{tag}'/'selected.json', {'params': sel.params, 'method': sel.method,
                                                      'val_acc': sel.val_acc, 'val_std': sel.val_std})
    collect(f'select-{tag}')
    say(f'chose {sel.method} {sel.params} val {sel.val_acc:.2f}±{sel.val_std:.2f}')
    bench(f'{tag}-selected', ipc, [{**PAPER, 'methods': [sel.method], **sel.params}])

def main():
    global out, W, RESULTS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out', help='the folder of the sweeps (run folders, shared stage 1)')
    ap.add_argument('--workers', type=int, default=2, help='points run in parallel processes')
    ap.add_argument('--results', default=None, help='copy the tables here')
    ap.add_argument('--collect', action='store_true', help='only write and copy the tables of the finished points')
    args = ap.parse_args()
    out, W, RESULTS = Path(args.out), args.workers, args.results and Path(args.results)
    if args.collect:
        from mgd3.sweep import write_results, recorded_points
        for d in sorted(p.parent for p in out.glob('*/sweep.json')):
            pts = recorded_points(d)
            r = write_results(d, pts, figures=False)
            collect(d.name)
            say(f'{d.name}: {len(r.rows)} rows of {len(pts)} points')
        return
    bench('ipc1-candidates', 1, m(*CAND, 'mgd3_no_stop') + m('mgd3_clip', 'mgd3', mode_guidance_scale=0.2)
          + m('mgd3_clip', mode_guidance_scale=0.3))
    bench('ipc10-candidates', 10, m(*CAND, 'mgd3_no_stop'))
    bench('ipc1-ablations', 1, m('random_real', 'mode_discovery_only')
          + [{'methods': ['mgd3'], 'mode_guidance_scale': lam} for lam in (0.05, 0.3, 1.0)]
          + [{'methods': ['mgd3'], 'stop_t': s} for s in (10, 40)])
    selected('ipc1', 1)
    bench('ipc1-more-ablations', 1, m('unguided', 'mgd3', sampler='ddim')
          + [{'methods': ['mgd3'], 'mode_method': mm} for mm in ('kmeans-closest', 'random')])
    bench('ipc10-clip', 10, [{'methods': ['mgd3_clip'], 'mode_guidance_scale': lam} for lam in (0.2, 0.3)])
    bench('ipc10-more-ablations', 10, m('unguided', 'mgd3', sampler='ddim')
          + [{'methods': ['mgd3'], 'mode_method': mm} for mm in ('random', 'kmeans-closest', 'gmm')])
    bench('ipc50-clip', 50, [{'methods': ['mgd3_clip'], 'mode_guidance_scale': lam} for lam in (0.3, 0.2)])
    bench('ipc50-candidates', 50, m('mgd3', 'mgd3_no_stop', 'mgd3_adaptive', 'unguided', 'mgd3_clip',
                                    'mgd3_matched', 'mgd3_semantic', 'mgd3_select'))
    say('all done')

if __name__ == '__main__':
    main()
