"""The effect of the authors' per-seed flipped modes on the embedded benchmark: accuracy and mode coverage of every
method, mean ± std over the generation seeds, for two run folders side by side.

    # the two default runs (one mode set of unflipped images vs each seed's flipped images), e.g. niced on a CPU:
    papermill nbs/run.ipynb out_none.ipynb -p out_dir runs/flips-none -p mode_flips none
    papermill nbs/run.ipynb out_authors.ipynb -p out_dir runs/flips-authors
    # or both at once, in parallel (papermill not needed):
    python benchmarks/mode_flips.py run --out-root runs --device cuda
    # then the table (any two finished run folders, e.g. one made by an older mgd3):
    python benchmarks/mode_flips.py summarize runs/flips-none runs/flips-authors

Accuracy is the best test top-1 over training of each evaluation (what `metrics.json` holds); coverage is recomputed
per generation seed (`metrics.json` keeps only its mean): the fraction of each class's real-data modes (k-means of the
teacher's features of the real train images, k = IPC) that receive a distilled image, as `mgd3.distill` computes it.
"""
import argparse, functools, json, subprocess, sys, time
from pathlib import Path
import numpy as np

def _run(out_dir:str, flips:str, device:str) -> float:
    "One default run (the embedded benchmark) with `mode_flips=flips`; returns its wall time in seconds."
    import mgd3
    t = time.time()
    params = {**mgd3.DistillConfig.defaults(), 'out_dir': out_dir, 'mode_flips': flips, 'device': device}
    mgd3.distill(**params)
    return time.time() - t

@functools.lru_cache(maxsize=4)
def _real_features(run_dir:Path):
    "The run, its teacher, and the teacher's features and labels of the real train images (the latent cache's rows)."
    import torch, mgd3
    from mgd3.run import Run
    run = Run.load(run_dir, device='cpu')
    spec = mgd3.dataset_spec(run.config.dataset)
    teacher = mgd3.load_teacher(run.config.teacher, device='cpu')
    cache = run.latent_cache()
    labels = torch.repeat_interleave(torch.arange(spec.num_classes), torch.tensor(cache.counts()))
    return run, spec, teacher, teacher.features(cache.real_images(torch.arange(len(labels)), run.config.data_root)), labels

def _coverages(run_dir:Path, method:str) -> list[float]:
    "Mode coverage of each generation seed's set of `method`, in the teacher's feature space (as `distill` does)."
    import mgd3
    run, spec, teacher, real, labels = _real_features(run_dir)
    out = []
    for g, _ in run.eval_runs(method):
        syn = mgd3.load_image_folder(run.image_dir(method, g), classes=list(spec.wnids))
        rep = mgd3.distillation_metrics(real, labels, teacher.features(syn.images), syn.labels, feature_space='teacher',
                                        tsne=False, seed=0)
        out.append(rep.mean['coverage'])
    return out

def summarize(run_dirs:list[str]) -> str:
    "A markdown table: per method, best top-1 and coverage (mean ± std over the seeds) of each run folder."
    runs = [(Path(d), json.loads((Path(d)/'metrics.json').read_text())) for d in run_dirs]
    methods = list(runs[0][1]['methods'])
    head = '| method | ' + ' | '.join(f'{d.name}: top-1 (%) | {d.name}: coverage' for d, _ in runs) + ' |'
    lines = [head, '|---|' + '---|---|' * len(runs)]
    for m in methods:
        cells = []
        for d, metrics in runs:
            accs = [a for net in metrics['methods'][m]['accuracy'].values() for a in net['best']]
            cov = _coverages(d, m)
            cells += [f'{np.mean(accs):.1f} ± {np.std(accs):.1f}', f'{np.mean(cov):.3f} ± {np.std(cov):.3f}']
        lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    nets = {n for _, metrics in runs for e in metrics['methods'].values() for n in e['accuracy']}
    lines.append(f'\nbest test top-1 of {", ".join(sorted(nets))} and mode coverage, mean ± std (numpy, ddof 0) over the '
                 'evaluations (seeded methods: generation seeds; mode_discovery_only: training seeds)')
    return '\n'.join(lines)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run', help="both default runs in parallel (mode_flips 'none' and 'authors'), then the table")
    r.add_argument('--out-root', default='runs')
    r.add_argument('--device', default=None)
    o = sub.add_parser('one', help='one default run (used by `run`)')
    o.add_argument('out_dir'); o.add_argument('flips'); o.add_argument('--device', default=None)
    s = sub.add_parser('summarize', help='the table of finished run folders')
    s.add_argument('run_dirs', nargs='+')
    a = ap.parse_args(argv)
    if a.cmd == 'one':
        print(f'{a.out_dir}: {_run(a.out_dir, a.flips, a.device):.1f} s', flush=True)
    elif a.cmd == 'run':
        dirs = [str(Path(a.out_root)/f'flips-{f}') for f in ('none', 'authors')]
        procs = [subprocess.Popen([sys.executable, __file__, 'one', d, f] + (['--device', a.device] if a.device else []))
                 for d, f in zip(dirs, ('none', 'authors'))]
        if any(p.wait() for p in procs): sys.exit('a run failed; its error is printed above')
        print(summarize(dirs))
    else: print(summarize(a.run_dirs))

if __name__ == '__main__': main()
