"""The measurements behind `benchmarks/gpu_check.sh`, one section per process: `header`, `sampler`, `vae`, `kmeans`,
`train`. Each prints BENCHMARKS.md-ready markdown (a heading, the command, a table) as it goes, and stops starting
new measurements once its `--budget` seconds are spent. Every model is built from its config with random weights,
because nothing can be downloaded on the device machine.

    python3 benchmarks/gpu_check.py SECTION [SECTION ...] [--toy] [--budget SECONDS]

`--toy` (or MGD3_GPU_CHECK_TOY=1) swaps in tiny models and sizes so that a CPU runs every section in seconds
(`tests/test_gpu_check.py`); the numbers it prints then only show that the code runs. Several sections in one call
share one process (the toy run does this to pay for the imports once); the budget applies to each section.
"""
import argparse, os, platform, re, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167  # ImageNet-1K train images
T0 = time.perf_counter()

def log(msg): print(f"[gpu_check {time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:5.1f}s] {msg}", file=sys.stderr)

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def timed(fn, dev):
    "Seconds that `fn()` takes, with the device synchronised before and after; returns (seconds, result)."
    sync(dev); t = time.perf_counter(); r = fn(); sync(dev)
    return time.perf_counter() - t, r

def table(header, rows):
    print('| ' + ' | '.join(header) + ' |'); print('|' + '---|' * len(header))
    for r in rows: print('| ' + ' | '.join(str(c) for c in r) + ' |')

def row(*cells):
    "Print one table row as soon as it is measured (a timed-out section keeps the rows it finished)."
    print('| ' + ' | '.join(str(c) for c in cells) + ' |', flush=True)

def fmt_h(seconds): return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"

def setting(a):
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if dev.type == 'cpu' and not a.toy:
        raise SystemExit("no CUDA device: this check is meant for a GPU; run it with --toy to exercise it on a CPU")
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else f"CPU ({os.cpu_count()} cores)"
    return dev, name

def command(a): return f"`python3 benchmarks/gpu_check.py {a.section}{' --toy' if a.toy else ''} --budget {a.budget:g}`"

def quiet_diffusers():
    from diffusers.utils import logging
    logging.set_verbosity_error()

def left(a): return a.budget - (time.perf_counter() - a.section_start)

# ---------------------------------------------------------------------------------------------------------------
def header(a):
    dev, name = setting(a)
    from importlib.metadata import version, PackageNotFoundError
    vers = {}
    for m in ('torch', 'diffusers', 'timm', 'torchvision', 'scikit-learn', 'numpy'):
        try: vers[m] = version(m)
        except PackageNotFoundError: vers[m] = 'not installed'
    print(f"## GPU check{' (toy sizes: the numbers only show that the code runs)' if a.toy else ''}\n")
    print(f"Measured on {name}, {os.cpu_count()} CPU cores, on {time.strftime('%Y-%m-%d')}; python "
          f"{platform.python_version()}, " + ', '.join(f"{k} {v}" for k, v in vers.items()) + '.')
    if dev.type == 'cuda':
        p = torch.cuda.get_device_properties(dev)
        print(f"GPU memory {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
              f"cuDNN TF32 for fp32 convolutions: {torch.backends.cudnn.allow_tf32}, "
              f"fp32 matmul precision: {torch.get_float32_matmul_precision()}.")
    try: import mgd3; ok = f"`import mgd3` works ({mgd3.__file__})"        # needs diffusers (the carried wheels)
    except Exception as e: ok = f"**`import mgd3` fails: {type(e).__name__}: {e}**, so every section below will fail"
    print(f"Script: `bash benchmarks/gpu_check.sh`; every model has random weights (nothing downloaded). {ok}.\n")

# ---------------------------------------------------------------------------------------------------------------
def build_backbone(dev, toy):
    "DiT-XL/2 (28 layers, 16 heads x 72, patch 2, 4x32x32 latents, 1000 classes, learned sigma) + the SD VAE; or tiny."
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel
    from mgd3.backbone import Backbone
    quiet_diffusers()
    if toy:
        dit = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, sample_size=8)
        vae = dict(block_out_channels=(8, 16), norm_num_groups=8)
    else:
        dit = dict(num_attention_heads=16, attention_head_dim=72, num_layers=28, sample_size=32)
        vae = dict(block_out_channels=(128, 256, 512, 512), norm_num_groups=32)
    nb = len(vae['block_out_channels'])
    with torch.device(dev):   # build on the device (fast init); .to() below moves any buffer made on the CPU
        tr = DiTTransformer2DModel(in_channels=4, out_channels=8, patch_size=2, num_embeds_ada_norm=1000, **dit)
        ae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                           down_block_types=('DownEncoderBlock2D',) * nb, up_block_types=('UpDecoderBlock2D',) * nb,
                           scaling_factor=0.18215, **vae)
    for m in (tr, ae): m.to(dev).eval().requires_grad_(False)
    side = dit['sample_size'] * 2 ** (nb - 1)
    return Backbone(transformer=tr, vae=ae, scheduler=DDPMScheduler(clip_sample=False, variance_type='learned_range'),
                    num_classes=1000, null_class=1000, class_names=tuple(map(str, range(1000))),
                    latent_shape=(4, dit['sample_size'], dit['sample_size']), scaling_factor=0.18215,
                    learned_sigma=True, image_size=side, image_channels=3,
                    name='dit-xl-2 architecture (random weights)' if not toy else 'tiny DiT (random weights)')

def sampler(a):
    from mgd3.sampler import generate
    from mgd3.core import pick_dtype
    dev, name = setting(a)
    prec = a.precision or ('bf16' if dev.type == 'cuda' else 'fp32')
    batches = a.batches or ([1, 64, 128, 256] if not a.toy else [1, 2])
    S = a.steps or (8 if not a.toy else 1)
    log(f"sampler: building the backbone on {dev}")
    bb = build_backbone(dev, a.toy)
    params = sum(p.numel() for p in bb.transformer.parameters()) / 1e6
    print(f"### 1. Mode-guided DiT sampling ({bb.name}, {params:.0f}M parameters), {prec}\n")
    print(f"Command: {command(a)}. `mgd3.generate` with mode guidance (λ 0.1, stop at half the steps), CFG 4.0 "
          f"(so each network call sees 2× the batch), DDPM with DiT's learned variance, {bb.image_size} px. A step's "
          f"cost is timed as the difference between {2 + S} and 2 steps (without decoding); the VAE decode of the "
          f"batch is timed on its own; both are projected to 50 steps.\n")
    table(['batch', 's / step', 'decode s / batch', 'images/s at 50 steps', 'vs batch 1', 'decode share',
           'ImageNet-1K IPC 50 (50,000 images)', 'IPC 10 (10,000)'], [])
    base = None
    amp = (torch.autocast(dev.type, dtype=pick_dtype(prec, dev)) if prec != 'fp32'
           else torch.autocast(dev.type, enabled=False))
    for b in batches:
        if left(a) < 5: row(b, 'skipped: time budget spent', '', '', '', '', '', ''); continue
        try:
            labels, seeds = [i % 1000 for i in range(b)], list(range(b))
            modes = torch.randn(b, *bb.latent_shape, generator=torch.Generator().manual_seed(0))
            run = lambda steps: generate(bb, labels, seeds=seeds, modes=modes, num_inference_steps=steps,
                                         stop_t=steps // 2, batch_size=b, chunk_size=b, precision=prec,
                                         progress=False, decode=False)
            run(2)                                             # warm-up: kernels, allocator
            t2, _ = timed(lambda: run(2), dev)
            tS, out = timed(lambda: run(2 + S), dev)
            step = max(tS - t2, 1e-9) / S; overhead = max(t2 - 2 * step, 0.0)
            with torch.no_grad(), amp:
                bb.decode(out.latents[:b].to(dev))             # warm-up
                td, _ = timed(lambda: bb.decode(out.latents[:b].to(dev)), dev)
            per_batch = overhead + 50 * step + td; ips = b / per_batch; base = base or ips
            row(b, f"{step:.4f}", f"{td:.3f}", f"{ips:.2f}", f"{ips / base:.1f}×", f"{100 * td / per_batch:.1f}%",
                fmt_h(50_000 / ips), fmt_h(10_000 / ips))
        except Exception as e:
            row(b, f"failed: {type(e).__name__}: {str(e)[:200]}", '', '', '', '', '', '')
        finally:
            if dev.type == 'cuda': torch.cuda.empty_cache()
    if dev.type == 'cuda': print(f"\nPeak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB.")
    print()

# ---------------------------------------------------------------------------------------------------------------
def vae(a):
    from diffusers import AutoencoderKL
    from mgd3.latents import encode_latents
    quiet_diffusers()
    dev, name = setting(a)
    side = 256 if not a.toy else 32
    cfg = (dict(block_out_channels=(128, 256, 512, 512), norm_num_groups=32) if not a.toy else
           dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=8))
    precs = a.precisions or (['fp32', 'bf16'] if dev.type == 'cuda' else ['fp32'])
    bs = a.batch_size or (64 if not a.toy else 8)
    n = a.images or (1024 if not a.toy else 16)
    print(f"### 2. VAE encoding ({'SD-VAE architecture, sd-vae-ft-mse config' if not a.toy else 'tiny VAE'}, "
          f"{side} px, random weights)\n")
    print(f"Command: {command(a)}. `mgd3.latents.encode_latents` (posterior mean × 0.18215, latents copied back "
          f"to the CPU) on {n} random images already on the device, batch {bs}, after one warm-up batch. "
          f"Image decoding and resizing (JPEG → tensor) are not included.\n")
    if dev.type == 'cuda':
        print(f"fp32 convolutions use TF32 when cuDNN allows it (here: {torch.backends.cudnn.allow_tf32}).\n")
    table(['precision', 'images/s', f'ImageNet-1K train ({IMAGENET_TRAIN:,} images)'], [])
    nbk = len(cfg['block_out_channels'])
    with torch.device(dev):
        ae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                           down_block_types=('DownEncoderBlock2D',) * nbk, up_block_types=('UpDecoderBlock2D',) * nbk,
                           scaling_factor=0.18215, **cfg)
    ae.to(dev).eval().requires_grad_(False)
    images = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0)).mul_(2).sub_(1).to(dev)
    for p in precs:
        if left(a) < 3: row(p, 'skipped: time budget spent', ''); continue
        try:
            from mgd3.core import pick_dtype
            m = ae.to(dtype=pick_dtype(p, dev))
            encode_latents(m, images[:bs], batch_size=bs)       # warm-up
            t, z = timed(lambda: encode_latents(m, images, batch_size=bs), dev)
            assert z.shape == (n, 4, side // 2 ** (nbk - 1), side // 2 ** (nbk - 1)) and torch.isfinite(z).all()
            row(p, f"{n / t:.1f}", fmt_h(IMAGENET_TRAIN * t / n))
        except Exception as e:
            row(p, f"failed: {type(e).__name__}: {str(e)[:200]}", '')
    print()

# ---------------------------------------------------------------------------------------------------------------
def blob_classes(C, n, d, dev, seed=0):
    "C classes of n points in d dims, each a 20-blob Gaussian mixture (blob sd 0.7 around N(0, 1) centres)."
    g = torch.Generator(device=dev).manual_seed(seed)
    out = []
    for _ in range(C):
        centres = torch.randn(20, d, generator=g, device=dev)
        out.append(centres[torch.randint(0, 20, (n,), generator=g, device=dev)] +
                   0.7 * torch.randn(n, d, generator=g, device=dev))
    return out

def kmeans_section(a):
    import numpy as np
    from sklearn.cluster import KMeans
    from mgd3.kmeans import kmeans, kmeans_batched
    dev, name = setting(a)
    n, d = (1300, 4096) if not a.toy else (200, 64)
    ks = [10, 50] if not a.toy else [3, 5]
    C = a.classes or (100 if not a.toy else 4)
    R = 5 if not a.toy else 2                   # classes timed one at a time
    print(f"### 3. Torch k-means at ImageNet-1K class shape ({n} × {d}), on {name}\n")
    print(f"Command: {command(a)}. Synthetic classes, each a 20-blob Gaussian mixture. `mgd3.kmeans.kmeans` one class "
          f"at a time (mean over {R} classes), and `kmeans_batched` on {C} classes at once (padded batch), "
          f"projected to 1,000 classes. scikit-learn's `KMeans(k, random_state=0, n_init='auto')` runs on class 0 "
          f"on this machine's {os.cpu_count()} CPU cores, and so does torch k-means on the CPU.\n")
    xs = blob_classes(C, n, d, dev)
    x0 = xs[0].cpu()
    D = 'GPU' if dev.type == 'cuda' else 'CPU'
    table(['k', f'torch {D}, one class', f'torch {D}, {C} classes batched (per class)', '1,000 classes (batched)',
           'sklearn, one class (CPU)', 'torch CPU, one class', f'sklearn / torch {D}', f'sklearn / {D} batched',
           'batched == one at a time', 'inertia torch / sklearn (seeds 0-2)'], [])
    for k in ks:
        if left(a) < 5: row(k, 'skipped: time budget spent', *[''] * 8); continue
        try:
            kmeans(xs[0], k, device=dev)                                      # warm-up
            ts, singles = [], []
            for i in range(R):
                t, r = timed(lambda: kmeans(xs[i], k, seed=0, device=dev), dev); ts.append(t); singles.append(r)
            one = sum(ts) / R
            kmeans_batched(xs[:2], k, device=dev)                             # warm-up of the batched shapes
            tb, rb = timed(lambda: kmeans_batched(xs, k, seed=0, device=dev), dev)
            same = all(torch.equal(s.labels, b.labels) for s, b in zip(singles, rb))
            diff = max(float((s.centroids - b.centroids).abs().max()) for s, b in zip(singles, rb))
            t_skl, skl = timed(lambda: KMeans(k, random_state=0, n_init='auto').fit(x0.numpy()), torch.device('cpu'))
            t_cpu, _ = timed(lambda: kmeans(x0, k, seed=0, device='cpu'), torch.device('cpu'))
            it = [kmeans(xs[0], k, seed=s, device=dev).inertia for s in range(3)]
            isk = [skl.inertia_] + [KMeans(k, random_state=s, n_init='auto').fit(x0.numpy()).inertia_ for s in (1, 2)]
            row(k, f"{one:.3f} s", f"{tb:.2f} s ({tb / C * 1000:.1f} ms)", f"{tb / C * 1000:.1f} s",
                f"{t_skl:.3f} s", f"{t_cpu:.3f} s", f"{t_skl / one:.1f}×", f"{t_skl / (tb / C):.0f}×",
                f"labels {'identical' if same else 'DIFFER'}, max centroid diff {diff:.1e}",
                f"{np.mean(it) / np.mean(isk):.4f}")
        except Exception as e:
            row(k, f"failed: {type(e).__name__}: {str(e)[:200]}", *[''] * 8)
    print()

# ---------------------------------------------------------------------------------------------------------------
def train(a):
    import contextlib, io
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    import bench_train
    dev, name = setting(a)
    nets = a.nets or (['resnet_ap10', 'resnet18'] if not a.toy else ['convnet3'])
    size, bs = (224, 64) if not a.toy else (32, 16)
    per_class, workers = (a.per_class or (50 if not a.toy else 3)), (8 if not a.toy else 0)
    epochs = 2 if not a.toy else 1
    print(f"### 4. Evaluation trainer at {size} px: mgd3's on-device augmentation vs an IDC-style pipeline\n")
    print(f"Command: {command(a)}, which runs `benchmarks/bench_train.py --size {size} --net NET --device {dev.type} "
          f"--per-class {per_class} --epochs {epochs} --workers {workers} --batch-size {bs}` ({10 * per_class} images, "
          f"{epochs} timed epoch(s) after a warm-up, the three pipelines' epochs interleaved, medians).\n")
    table(['network', 'mgd3 epochs/s', 'augmentation share', 'IDC ImageFolder + PIL epochs/s', 'mgd3 vs IDC',
           'IDC in memory epochs/s', 'mgd3 vs IDC in memory'], [])
    logs = []
    for net in nets:
        if left(a) < 10: row(net, 'skipped: time budget spent', *[''] * 5); continue
        argv = ['bench_train.py', '--size', str(size), '--net', net, '--device', dev.type,
                '--per-class', str(per_class), '--epochs', str(epochs), '--workers', str(workers),
                '--batch-size', str(bs)]
        buf, old = io.StringIO(), sys.argv
        try:
            sys.argv = argv
            with contextlib.redirect_stdout(buf): bench_train.main()
            text = buf.getvalue(); logs.append((net, text))
            m = re.search(r"mgd3 batch pipeline:\s+([\d.]+) epochs/s\s+\(data \+ augmentation = ([\d.]+)%", text)
            i = re.search(r"IDC-style ImageFolder\+PIL:\s+([\d.]+) epochs/s\s+-> mgd3 is ([\d.]+)x", text)
            j = re.search(r"IDC-style, images in memory:\s+([\d.]+) epochs/s\s+-> mgd3 is ([\d.]+)x", text)
            row(net, m[1], f"{m[2]}%", i[1], f"{i[2]}×", j[1], f"{j[2]}×")
        except Exception as e:
            logs.append((net, buf.getvalue()))
            row(net, f"failed: {type(e).__name__}: {str(e)[:200]}", *[''] * 5)
        finally:
            sys.argv = old
            if dev.type == 'cuda': torch.cuda.empty_cache()
    for net, text in logs:
        print(f"\n<details><summary>bench_train.py output, {net}</summary>\n\n```\n{text.strip()}\n```\n</details>")
    print()

SECTIONS = {'header': header, 'sampler': sampler, 'vae': vae, 'kmeans': kmeans_section, 'train': train}

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('sections', nargs='+', choices=list(SECTIONS), metavar='SECTION', help=', '.join(SECTIONS))
    ap.add_argument('--toy', action='store_true', default=os.environ.get('MGD3_GPU_CHECK_TOY') == '1',
                    help='tiny models and sizes (CPU check); also MGD3_GPU_CHECK_TOY=1')
    ap.add_argument('--budget', type=float, default=60,
                    help='seconds per section after which no new measurement starts')
    ap.add_argument('--batches', type=int, nargs='+', help='sampler: batch sizes (default 1 64 128 256)')
    ap.add_argument('--steps', type=int, help='sampler: timed steps per batch (default 8)')
    ap.add_argument('--precision', help='sampler: fp32 / bf16 (default bf16 on a GPU, fp32 on a CPU)')
    ap.add_argument('--precisions', nargs='+', help='vae: precisions (default fp32 bf16 on a GPU, fp32 on a CPU)')
    ap.add_argument('--batch-size', type=int, help='vae: images per encoder call (default 64)')
    ap.add_argument('--images', type=int, help='vae: images encoded (default 1024)')
    ap.add_argument('--classes', type=int, help='kmeans: classes batched together (default 100)')
    ap.add_argument('--nets', nargs='+', help='train: networks (default resnet_ap10 resnet18)')
    ap.add_argument('--per-class', type=int, help='train: images per class (default 50)')
    a = ap.parse_args(argv)
    setting(a)   # refuse full sizes without a GPU before any section starts
    failed = []
    for name in a.sections:
        a.section, a.section_start = name, time.perf_counter()
        torch.manual_seed(0)
        log(f"{name}: start (budget {a.budget:g} s)")
        try: SECTIONS[name](a)
        except Exception as e:   # report and go on to the next section
            import traceback
            print(f"\n**Section {name} failed: {type(e).__name__}: {e}**\n\n```\n{traceback.format_exc()[-2000:]}```\n")
            failed.append(name)
        log(f"{name}: done in {time.perf_counter() - a.section_start:.1f} s")
    if failed: sys.exit(1)

if __name__ == '__main__': main()
