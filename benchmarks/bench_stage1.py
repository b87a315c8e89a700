"""Stage-1 benchmark: latent-encoding throughput and peak memory at 1x and 10x the image count, and k-means time on
an ImageNet-1K-shaped class.

    python benchmarks/bench_stage1.py [--base 256] [--size 128] [--threads N]

Encoding: a synthetic ImageFolder of random JPEGs (4 classes; the default 1x has 64 per class so both runs fill
batches of 32 and the activation memory is the same) is encoded with a tiny random AutoencoderKL (3 blocks,
4x(size/4)^2 latents) by `cache_latents` (per-class shards, the streaming path) and, side by side, by the naive path
(`load_split` everything, then `encode_latents`). Each measurement runs in a fresh process; peak RSS is that process's
ru_maxrss; "above baseline" subtracts the RSS after imports and VAE construction. Bar: the streaming path's peak RSS
at 10x is at most 20% above its peak at 1x.

k-means: `discover_modes` on one class of 1300 latents of 4096 values (4x32x32, the DiT/SD-VAE latent of a 256 image),
drawn from a 20-blob Gaussian mixture, k = 10 and 50 (sklearn KMeans, random_state=0, n_init="auto").
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

def rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def make_tree(root, n_per_class, size, classes=4):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f'class{c}'; d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 255, (size * 3 // 4 + 24, size + 32, 3), dtype=np.uint8)).save(d / f'{i}.jpg', quality=90)

def child_encode(args):
    import torch
    from diffusers import AutoencoderKL
    from mgd3.data import folder_spec, load_split, to_model_range
    from mgd3.latents import cache_latents, encode_latents
    torch.manual_seed(0)
    vae = AutoencoderKL(down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                        block_out_channels=(8, 16, 32), latent_channels=4, norm_num_groups=8,
                        mid_block_add_attention=False).eval()
    spec = folder_spec(args.root, image_size=args.size)
    base = rss_mb(); t0 = time.perf_counter()
    if args.mode == 'stream':
        cache = cache_latents(vae, spec, args.root, args.cache, split=None, batch_size=32, progress=False)
        n = sum(cache.counts())
    else:
        x, y = load_split(spec, args.root, split=None)
        z = encode_latents(vae, to_model_range(x), batch_size=32); n = len(z)
    dt = time.perf_counter() - t0
    print(json.dumps({'n': n, 'seconds': dt, 'peak_rss_mb': rss_mb(), 'baseline_rss_mb': base}))

def run_child(mode, root, cache, size, threads):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    if threads: env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, __file__, '--child', mode, '--root', str(root), '--cache', str(cache),
                          '--size', str(size)], capture_output=True, text=True, env=env)
    if out.returncode: raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])

def bench_encoding(base, size, threads):
    print(f"== encoding: synthetic ImageFolder, 4 classes, {size}px, tiny AutoencoderKL (8,16,32), batch 32")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mult in (1, 10):
            root = Path(tmp) / f'x{mult}'; make_tree(root, base * mult // 4, size)
            for mode in ('stream', 'naive'):
                r = run_child(mode, root, Path(tmp) / f'cache_{mode}_{mult}', size, threads)
                rows[mode, mult] = r
                print(f"{mode:>6} {mult:>2}x: {r['n']:5d} images in {r['seconds']:6.2f} s = {r['n'] / r['seconds']:7.1f} img/s; "
                      f"peak RSS {r['peak_rss_mb']:7.1f} MB ({r['peak_rss_mb'] - r['baseline_rss_mb']:6.1f} MB above baseline)")
    for mode in ('stream', 'naive'):
        ratio = rows[mode, 10]['peak_rss_mb'] / rows[mode, 1]['peak_rss_mb']
        extra = (rows[mode, 10]['peak_rss_mb'] - rows[mode, 10]['baseline_rss_mb']) / max(
            1e-9, rows[mode, 1]['peak_rss_mb'] - rows[mode, 1]['baseline_rss_mb'])
        verdict = ('PASS' if ratio <= 1.2 else 'FAIL') + ' (bar: <= 1.20)' if mode == 'stream' else '(reference)'
        print(f"{mode:>6}: peak RSS 10x / 1x = {ratio:.3f}  above-baseline 10x / 1x = {extra:.2f}  {verdict}")
    return rows

def bench_kmeans(threads):
    import torch
    from mgd3.modes import discover_modes
    if threads: torch.set_num_threads(threads)
    print("== k-means on one ImageNet-1K-shaped class: 1300 latents x 4096 (4x32x32), 20-blob mixture")
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 4096, generator=g)
    lat = (centres[torch.randint(0, 20, (1300,), generator=g)] + 0.7 * torch.randn(1300, 4096, generator=g)).reshape(1300, 4, 32, 32)
    lab = torch.zeros(1300, dtype=torch.long)
    for k in (10, 50):
        t0 = time.perf_counter(); ms = discover_modes(lat, lab, ipc=k, n_jobs=1); dt = time.perf_counter() - t0
        print(f"kmeans k={k:>2}: {dt:6.2f} s  (sizes min/max {int(ms.sizes.min())}/{int(ms.sizes.max())}); "
              f"x1000 classes ~ {dt * 1000 / 60:.1f} min single-threaded")

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--base', type=int, default=256, help='images at 1x (10x uses ten times as many)')
    p.add_argument('--size', type=int, default=128)
    p.add_argument('--threads', type=int, default=0, help='OMP/torch threads (0: leave as is)')
    p.add_argument('--child'); p.add_argument('--mode'); p.add_argument('--root', type=Path); p.add_argument('--cache', type=Path)
    a = p.parse_args()
    if a.child:
        a.mode = a.child; child_encode(a)
    else:
        import torch
        print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cpu_count {os.cpu_count()}, threads {a.threads or 'default'}")
        bench_encoding(a.base, a.size, a.threads)
        bench_kmeans(a.threads)
