"""The baselines of the paper's tables on the embedded benchmark, beside MGD³: one resumable mgd3 sweep.

MNIST-5k with the tiny-mnist backbone, ConvNet-3, the `mnist5k` evaluation preset, generation seeds 0/1/2, the
paper's sampler settings (λ 0.1, t_stop 25 of 50 DDPM steps), at IPC 1, 10 and 50. Each point is one method at one
IPC (one `mgd3.distill` run folder), so an interrupted sweep resumes where it stopped. Hard labels for every method
(the benchmark's protocol); at IPC 10, `rded_select` is also run under the soft-label protocol (its own, Table 3)
with the dataset's teacher, beside `mgd3` and `random_real` under the same protocol. `full_real` (the whole training
split, trained with the preset's fixed epochs) is the same at every IPC and runs once.

Usage: python benchmarks/baselines_embedded.py --out runs/baselines --workers 2
       (2 CPU cores: about an hour; the table is written to <out>/table.md and <out>/table.csv)
       python benchmarks/baselines_embedded.py --out /tmp/b --ipcs 1 --methods d4m --seeds 0   (a quick look)
"""
import argparse, os

PAPER = dict(mode_guidance_scale=0.1, stop_t=25, sampler='ddpm', mode_method='kmeans')
METHODS = ('random_real', 'unguided', 'mgd3', 'd4m', 'rded_select', 'full_real')
SOFT = ('random_real', 'mgd3', 'rded_select')   # also measured with the teacher's soft labels


ONCE = ('full_real',)   # the whole training split: the same set and trainings at every IPC (fixed epochs)
SOFT_IPCS = (10,)   # the soft-label points: IPC 10 only (each costs the teacher's forward passes too)


def points(ipcs, methods, soft):
    "One point per (IPC, method, protocol); a method in ONCE at the middle IPC only."
    mid = sorted(ipcs)[len(ipcs) // 2]
    hard = [{'ipc': ipc, 'methods': [m], 'protocol': 'hard'} for ipc in ipcs for m in methods
            if m not in ONCE or ipc == mid]
    return hard + [{'ipc': ipc, 'methods': [m], 'protocol': 'soft'} for ipc in ipcs if ipc in SOFT_IPCS
                   for m in soft if m in methods]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default='runs/baselines')
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--ipcs', type=int, nargs='+', default=[1, 10, 50])
    ap.add_argument('--methods', nargs='+', default=list(METHODS))
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--no-soft', action='store_true', help='hard labels only')
    args = ap.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from mgd3.sweep import sweep
    base = dict(dataset='mnist5k', seeds=args.seeds, nets=['convnet3'], **PAPER)
    res = sweep(points(args.ipcs, args.methods, () if args.no_soft else SOFT), args.out, base, workers=args.workers)
    print(res.markdown.read_text())


if __name__ == '__main__':
    main()
