"""How many sampling steps `mgd3_adaptive` guides each image on the embedded benchmark (MNIST-5k, tiny-mnist).

For IPC 1, 10 and 50 and generation seeds 0, 1, 2, it makes the stage 1 a benchmark point makes (a scratch run
folder: latent cache, per-seed flipped k-means modes), gives every image its mode's radius (`adaptive_radii`, as
`mgd3_adaptive` does) and samples exactly the images `mgd3_adaptive` writes (the same jobs, seeds and settings, without
decoding), reading `Generated.guided_steps`. With 50 DDPM steps and t_stop = 0 the loop guides at most 49 steps (the
authors' `t > stop_t` rule), which is what `mgd3_no_stop` does to every image; the paper's t_stop = 25 guides 24.
Usage: OMP_NUM_THREADS=1 python benchmarks/adaptive_steps.py OUT.json [--scratch DIR] [--ipcs 1 10 50]"""
import argparse, os, tempfile, time
from dataclasses import replace
os.environ.setdefault('OMP_NUM_THREADS', '1')
import torch
from mgd3.config import DistillConfig
from mgd3.core import save_json, pick_device
from mgd3.run import Run
from mgd3.distill import prepare
from mgd3.candidates import adaptive_radii
from mgd3.sampler import generate
from mgd3.guidance import make_guidance

def summary(steps:torch.Tensor, most:int) -> dict:
    "Distribution of the guided steps of a set of images; `most` is what a fixed t_stop = 0 guides."
    s = steps.double()
    return {'n': len(s), 'mean': float(s.mean()), 'median': float(s.median()), 'min': int(s.min()),
            'max': int(s.max()), 'q25': float(s.quantile(0.25)), 'q75': float(s.quantile(0.75)),
            'stopped_early': float((steps < most).double().mean()),
            'histogram': {int(v): int(c) for v, c in zip(*torch.unique(steps, return_counts=True))}}

def measure(ipc:int, scratch:str, seeds=(0, 1, 2)) -> dict:
    config = DistillConfig.from_params(ipc=ipc, seeds=list(seeds), out_dir=os.path.join(scratch, f'ipc{ipc}'),
                                       methods=['mgd3_adaptive'], tsne=False)
    with Run.writer(config) as run: ctx = prepare(run, pick_device('cpu'))
    settings = replace(ctx.settings, stop_t=0)
    S = settings.num_inference_steps   # what a fixed t_stop = 0 guides (`mgd3_no_stop`), by the sampler's own rule
    most = sum(make_guidance(torch.zeros(1, 1), settings).active(i, S) for i in range(S))
    out = {'most': most, 'seeds': {}}
    all_steps = []
    for seed in seeds:
        jobs = ctx.jobs(seed)
        g = generate(ctx.backbone, [j.label for j in jobs], seeds=[j.seed for j in jobs],
                     modes=ctx.modes_for(seed).centroids.flatten(0, 1), settings=settings,
                     mode_radius=adaptive_radii(ctx, seed), batch_size=config.batch_size, decode=False,
                     progress=False)
        out['seeds'][seed] = summary(g.guided_steps, most)
        all_steps.append(g.guided_steps)
        print(f'ipc {ipc} seed {seed}: {out["seeds"][seed]}', flush=True)
    out['all'] = summary(torch.cat(all_steps), most)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out', help='the JSON file to write')
    ap.add_argument('--scratch', default=None, help='scratch run folders (default: a temporary folder)')
    ap.add_argument('--ipcs', type=int, nargs='+', default=[1, 10, 50])
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        res = {f'ipc{ipc}': measure(ipc, args.scratch or tmp) for ipc in args.ipcs}
    save_json(args.out, {'guided_steps': res, 'seconds': round(time.time() - t0, 1),
                         'command': 'OMP_NUM_THREADS=1 python benchmarks/adaptive_steps.py ' + args.out})
    print(f'{time.time() - t0:.0f} s; wrote {args.out}')

if __name__ == '__main__':
    main()
