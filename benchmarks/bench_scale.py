"""Scale benchmark: peak memory and time of each stage-1 step, each baseline and the metrics at 100 and at 1,000
classes, and the ImageNet-1K projections of mode discovery.

    PYTHONPATH=. python benchmarks/bench_scale.py [--classes 100 1000] [--per-class 130] [--ipc 10] [--work DIR]

Inputs, built once under --work (default /tmp/mgd3-bench-scale) and reused:

- a synthetic latent cache shaped like ImageNet-1K: the classes of `imagenet100` and of `imagenet1k` (real wnids),
  --per-class latents of 4x32x32 per class (the DiT/SD-VAE latent of a 256 px image) drawn from a 20-blob Gaussian
  mixture per class, written with `LatentCache.create` / `write_class`: the cache's own format (safetensors shards,
  cache.json), float32 unless --dtype;
- an ImageNet-layout tree of small JPEGs (`mgd3.testing.imagenet_tree`, 3 per class) encoded with a tiny random VAE
  at 32 px into a real cache: the input of the steps that need real images (encoding, the baselines' written sets,
  the metrics).

Steps, each in a fresh process (peak RSS is that process's ru_maxrss; `baseline` is its RSS after the imports, before
the step):

- stage 1: `encode` (cache_latents on the tree), `open` (reopen a cache and read every shard header), `modes-kmeans`
  (discover_modes_cached, scikit-learn, k = --ipc on the synthetic cache), `modes-torch` (the same with kmeans-torch
  on the CPU, one class at a time);
- baselines on the synthetic cache (the selection, at k = --ipc): `random_real-select`, `herding-select`,
  `mode_discovery_only-select`; and end to end on the tree's cache (select and write the real images, IPC 2):
  `random_real`, `herding`, `mode_discovery_only`;
- `metrics`: `mgd3.streamed_metrics` as `distill.compute_metrics` runs it (the class's real images from the cache,
  the class's images of two written sets, features of a random ConvNet-3 teacher), t-SNE on the first 10 classes.

The memory bar: each step's peak RSS at 1,000 classes is at most 20% above its peak at 100 classes.

Projections of ImageNet-1K mode discovery at 1,300 images per class (--project-classes classes of 1,300 x 4,096 blob
latents, k = 10 and 50, timed here side by side): scikit-learn's KMeans and torch k-means on this CPU, times 1,000
classes; the GPU line comes from the measured H200 check in BENCHMARKS.md (--gpu-seconds); the `open` step reports
the rate at which the shards are read here (page cache included). `--child` is internal.
"""
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ('encode', 'open', 'modes-kmeans', 'modes-torch', 'random_real-select', 'herding-select',
         'mode_discovery_only-select', 'random_real', 'herding', 'mode_discovery_only', 'metrics')
DATASET = {100: 'imagenet100', 1000: 'imagenet1k'}

def rss_mb() -> float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

# ---- inputs ----------------------------------------------------------------------------------------------------------
def blobs(n, seed, d=4096, k=20, sd=0.7):
    "n latents [n, 4, 32, 32] from a k-blob Gaussian mixture (N(0, 1) centres), seeded."
    import torch
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g)
    return (centres[torch.randint(0, k, (n,), generator=g)] + sd * torch.randn(n, d, generator=g)).view(n, 4, 32, 32)

def synthetic_cache(work:Path, classes:int, per_class:int, dtype:str):
    "The synthetic ImageNet-shaped latent cache (built one class at a time, reused)."
    import torch
    from mgd3.data import dataset_spec
    from mgd3.latents import LatentCache
    spec = dataset_spec(DATASET[classes])
    key = {'dataset': spec.name, 'split': 'train', 'source': 'synthetic-blobs', 'vae': f'none-{per_class}',
           'image_size': 256, 'dtype': dtype, 'format': 1}
    cache = LatentCache.create(work / 'latents', spec, key)
    for c in range(spec.num_classes):
        if not cache.shard_path(c).exists():
            cache.write_class(c, blobs(per_class, seed=c), torch.arange(per_class), None)
    return cache

def tiny_vae():
    import torch
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    return AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * 2, up_block_types=('UpDecoderBlock2D',) * 2,
                         block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8,
                         mid_block_add_attention=False).eval()

def tree(work:Path, classes:int) -> Path:
    from mgd3.testing import imagenet_tree
    return imagenet_tree(work / f'tree-{classes}', DATASET[classes], train_per_class=3, val_per_class=1)

def tree_cache(work:Path, classes:int):
    from mgd3.latents import cache_latents
    return cache_latents(tiny_vae(), DATASET[classes], tree(work, classes), work / 'tree-latents', image_size=32,
                         progress=False)

def context(work:Path, classes:int, cache, ipc:int):
    "A `MethodContext` for the baselines: the cache and its modes (no backbone: the baselines use none)."
    from types import SimpleNamespace
    from mgd3.methods import MethodContext
    from mgd3.modes import discover_modes_cached
    modes = discover_modes_cached(cache, ipc)
    cfg = SimpleNamespace(data_root=str(tree(work, classes)))
    return MethodContext(cfg, cache.spec, None, cache, modes, list(range(cache.spec.num_classes)), None)

# ---- one step, in a child process ------------------------------------------------------------------------------------
def child(step:str, work:Path, classes:int, per_class:int, ipc:int, dtype:str) -> dict:
    import torch
    from mgd3.latents import LatentCache
    from mgd3.modes import discover_modes_cached, ModeSet
    from mgd3.metrics import select_random_real, select_herding, streamed_metrics
    from mgd3.methods import get_method
    from mgd3.evalnets import Teacher, create_evalnet
    from mgd3.images import class_set_images
    synthetic = step in ('open', 'modes-kmeans', 'modes-torch') or step.endswith('-select')
    folder = synthetic_cache(work, classes, per_class, dtype).folder if synthetic else None
    cache = LatentCache.open(folder) if synthetic else (tree_cache(work, classes) if step != 'encode' else None)
    ctx = context(work, classes, cache, 2) if step in ('random_real', 'herding', 'mode_discovery_only', 'metrics') \
        else None
    modes_path = work / f'modes-{classes}-{per_class}-{ipc}-{dtype}.safetensors'
    if step == 'mode_discovery_only-select' and not modes_path.exists():
        discover_modes_cached(cache, ipc).save(modes_path)
    base, t0, extra = rss_mb(), time.perf_counter(), {}
    if step == 'encode':
        import shutil
        shutil.rmtree(work / 'encode-latents', ignore_errors=True)
        from mgd3.latents import cache_latents
        c = cache_latents(tiny_vae(), DATASET[classes], tree(work, classes), work / 'encode-latents', image_size=32,
                          progress=False)
        extra['images'] = sum(c.counts())
    elif step == 'open':
        c = LatentCache.open(folder)
        extra['latents'] = sum(c.counts())
        extra['read_mb_s'] = _read_rate(c)
    elif step in ('modes-kmeans', 'modes-torch'):
        m = discover_modes_cached(cache, ipc, method='kmeans' if step == 'modes-kmeans' else 'kmeans-torch',
                                  device='cpu')
        extra['modeset_mb'] = round(m.centroids.numel() * 4 / 2**20, 1)
        if step == 'modes-kmeans': m.save(modes_path)
    elif step == 'random_real-select':
        labels = torch.repeat_interleave(torch.arange(cache.spec.num_classes), torch.tensor(cache.counts()))
        extra['rows'] = len(select_random_real(labels, ipc, seed=0))
    elif step == 'herding-select':
        rows, start = [], 0
        for c, n in enumerate(cache.counts()):
            rows.append(select_herding(cache.class_latents(c).flatten(1), torch.zeros(n, dtype=torch.long), ipc) + start)
            start += n
        extra['rows'] = len(torch.cat(rows))
    elif step == 'mode_discovery_only-select':
        extra['rows'] = len(ModeSet.load(modes_path).closest.flatten())
    elif step in ('random_real', 'herding', 'mode_discovery_only'):
        out = work / 'sets' / f'{step}-{classes}'
        import shutil
        shutil.rmtree(out, ignore_errors=True)
        get_method(step).make(ctx, 0, out)
        extra['images'] = len(list(out.rglob('*.png')))
    elif step == 'metrics':
        sets = {}
        for m in ('random_real', 'mode_discovery_only'):
            out = work / 'sets' / f'{m}-{classes}-metrics'
            if not (out / 'done.json').exists(): get_method(m).make(ctx, 0, out)
            sets[m] = out
        torch.manual_seed(0)
        teacher = Teacher(create_evalnet('convnet3', 1000, 32), image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
        base, t0 = rss_mb(), time.perf_counter()
        reps = streamed_metrics(lambda c: teacher.features(cache.class_images(c, ctx.config.data_root)),
                                {m: (lambda c, d=d: teacher.features(class_set_images(d, cache.spec.wnids[c])))
                                 for m, d in sets.items()}, range(cache.spec.num_classes),
                                feature_space='random ConvNet-3', k=2, tsne_sets=['random_real'], tsne_classes=10,
                                tsne_iters=250)
        extra['coverage'] = round(reps['random_real'].mean['coverage'], 3)
    return {'seconds': time.perf_counter() - t0, 'peak_rss_mb': rss_mb(), 'baseline_rss_mb': base, **extra}

def _read_rate(cache) -> float:
    "MB/s of reading every shard's latents as stored (the page cache may hold them: an upper bound for a disk)."
    t0, nbytes = time.perf_counter(), 0
    for c in range(cache.spec.num_classes): nbytes += cache.class_latents(c).numel() * cache.dtype.itemsize
    return nbytes / 2**20 / (time.perf_counter() - t0)

def run_child(args, step:str, classes:int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND='Agg')
    cmd = [sys.executable, __file__, '--child', step, '--classes', str(classes), '--per-class', str(args.per_class),
           '--ipc', str(args.ipc), '--work', str(args.work), '--dtype', args.dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode: raise RuntimeError(f"{step} at {classes} classes failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

# ---- projections -----------------------------------------------------------------------------------------------------
def projections(n_classes:int, ks=(10, 50)) -> dict:
    "Seconds per 1,300 x 4,096 class, scikit-learn and torch k-means on this CPU (medians over n_classes classes)."
    import statistics
    from sklearn.cluster import KMeans
    from mgd3.kmeans import kmeans
    out = {}
    for k in ks:
        t_sk, t_th = [], []
        for c in range(n_classes):
            x = blobs(1300, seed=10_000 + c).flatten(1)
            t0 = time.perf_counter()
            KMeans(n_clusters=k, random_state=0, n_init='auto').fit(x.numpy())
            t_sk.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            kmeans(x, k, seed=0, device='cpu')
            t_th.append(time.perf_counter() - t0)
        out[k] = {'sklearn': statistics.median(t_sk), 'torch': statistics.median(t_th)}
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--classes', type=int, nargs='+', default=[100, 1000], choices=[100, 1000])
    ap.add_argument('--per-class', type=int, default=130, help='synthetic latents per class (>= 130)')
    ap.add_argument('--ipc', type=int, default=10, help='k of mode discovery and IPC of the selections')
    ap.add_argument('--dtype', default='float32', help='storage dtype of the synthetic cache')
    ap.add_argument('--work', type=Path, default=Path('/tmp/mgd3-bench-scale'))
    ap.add_argument('--steps', nargs='+', default=list(STEPS), choices=STEPS)
    ap.add_argument('--project-classes', type=int, default=2, help='classes timed for the projections (0: skip)')
    ap.add_argument('--gpu-seconds', type=float, nargs=2, default=[0.5, 1.0], metavar=('K10', 'K50'),
                    help='measured GPU seconds for 1,000 batched classes at k = 10 and 50 (BENCHMARKS.md, H200)')
    ap.add_argument('--child')
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(args.child, args.work, args.classes[0], args.per_class, args.ipc, args.dtype)))
        return
    print(f"== scale benchmark: {args.per_class} synthetic latents per class (4x32x32, {args.dtype}), k = IPC = "
          f"{args.ipc}; real-image steps on a 3-image-per-class tree at 32 px, IPC 2; torch threads "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}")
    rows = {}
    for step in args.steps:
        for C in args.classes:
            rows[step, C] = r = run_child(args, step, C)
            note = ', '.join(f'{k} {v}' for k, v in r.items() if k not in ('seconds', 'peak_rss_mb', 'baseline_rss_mb'))
            print(f"{step:<28} {C:>5} classes  {r['seconds']:8.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB "
                  f"(baseline {r['baseline_rss_mb']:5.0f} MB, step +{r['peak_rss_mb'] - r['baseline_rss_mb']:5.0f} MB)"
                  f"  {note}", flush=True)
    if set(args.classes) == {100, 1000}:
        print("\n| step | 100 classes: s / peak MB | 1,000 classes: s / peak MB | peak 1,000 / 100 | bar (<= 1.20) |")
        print("|---|---|---|---|---|")
        for step in args.steps:
            a, b = rows[step, 100], rows[step, 1000]
            ratio = b['peak_rss_mb'] / a['peak_rss_mb']
            print(f"| {step} | {a['seconds']:.1f} / {a['peak_rss_mb']:.0f} | {b['seconds']:.1f} / {b['peak_rss_mb']:.0f}"
                  f" | {ratio:.2f} | {'met' if ratio <= 1.2 else 'MISSED'} |")
    if args.project_classes:
        proj = projections(args.project_classes)
        print(f"\n== ImageNet-1K mode discovery at 1,300 images per class (1,000 classes; per-class medians of "
              f"{args.project_classes} classes here)")
        print("| k | sklearn s/class (CPU) | torch s/class (CPU) | sklearn, 1,000 classes | torch, 1,000 classes | "
              "GPU, 1,000 classes batched (H200, measured) |")
        print("|---|---|---|---|---|---|")
        for (k, t), gpu in zip(proj.items(), args.gpu_seconds):
            print(f"| {k} | {t['sklearn']:.2f} | {t['torch']:.2f} | {t['sklearn'] * 1000 / 3600:.2f} h | "
                  f"{t['torch'] * 1000 / 3600:.2f} h | {gpu:.1f} s |")

if __name__ == '__main__':
    main()
