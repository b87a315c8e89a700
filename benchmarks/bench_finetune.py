"""Fine-tuning speed of `mgd3.finetune.finetune_transformer` against a bare PyTorch loop of the same model, side by
side in one process (same data, batch, loss, trainable subset, optimiser and EMA).

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune.py [--steps 60] [--batch-size 32] [--device cpu]

Prints images/s of each and their ratio (target: mgd3 ≥ 0.9× the bare loop)."""
import argparse, copy, json, time
from dataclasses import replace
import torch
from diffusers import DDPMScheduler
from mgd3.backbone import load_backbone
from mgd3.finetune import FinetuneConfig, FinetuneData, finetune_transformer, mark_trainable
from mgd3.losses import DiffusionTerms, hybrid_loss


def bare_loop(model, z, labels, terms, steps, batch_size, device, null_class, ema_decay=0.9999):
    "The minimum: draw a batch, noise it, hybrid loss, backward, AdamW step, EMA."
    params = mark_trainable(model, 'difffit')
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0)
    ema = copy.deepcopy(model).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    ab = terms.alpha_bar.float().to(device)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(z), (batch_size,), generator=g)
        x0, y = z[idx].to(device), labels[idx].to(device)
        t = torch.randint(1000, (batch_size,), generator=g).to(device)
        noise = torch.randn(x0.shape, generator=g).to(device)
        y = torch.where(torch.rand(batch_size, generator=g).to(device) < 0.1, null_class, y)
        a = ab[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        out = model(xt, timestep=t, class_labels=y).sample
        mse, vlb = hybrid_loss(out, x0, xt, t, noise, terms, 1e-3)
        loss = (mse + vlb).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()): pe.lerp_(pm, 1 - ema_decay)
    return loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--backbone', default='tiny-mnist')
    ap.add_argument('--steps', type=int, default=60)
    ap.add_argument('--batch-size', type=int, default=32)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    bb = load_backbone(a.backbone, device=a.device)
    C, H, W = bb.latent_shape
    g = torch.Generator().manual_seed(0)
    n = a.batch_size * 8
    z = torch.randn(n, C, H, W, generator=g)
    labels = torch.arange(n) % bb.num_classes
    terms = DiffusionTerms.from_scheduler(DDPMScheduler.from_config(bb.scheduler.config))
    data = FinetuneData(z, z.flip(-1), labels, labels)
    cfg = FinetuneConfig(steps=a.steps, batch_size=a.batch_size)
    base = copy.deepcopy(bb.transformer).cpu()
    res = {'mgd3': [], 'bare': []}
    finetune_transformer(copy.deepcopy(base).to(a.device), data, terms, replace(cfg, steps=2), null_class=bb.null_class,
                         progress=False)   # warm-up: the Accelerator, allocators, first kernels
    for r in range(a.repeats):   # interleaved, so that load changes hit both alike
        m = copy.deepcopy(base).to(a.device)
        t0 = time.perf_counter()
        finetune_transformer(m, data, terms, cfg, null_class=bb.null_class, progress=False)
        if a.device.startswith('cuda'): torch.cuda.synchronize()
        res['mgd3'].append(a.steps * a.batch_size / (time.perf_counter() - t0))
        m = copy.deepcopy(base).to(a.device)
        t0 = time.perf_counter()
        bare_loop(m, z, labels, terms, a.steps, a.batch_size, a.device, bb.null_class)
        if a.device.startswith('cuda'): torch.cuda.synchronize()
        res['bare'].append(a.steps * a.batch_size / (time.perf_counter() - t0))
    best = {k: max(v) for k, v in res.items()}
    med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
    print(json.dumps({'backbone': a.backbone, 'device': a.device, 'steps': a.steps, 'batch_size': a.batch_size,
                      'images_per_s': res, 'best': best, 'median': med,
                      'ratio_best': best['mgd3'] / best['bare'], 'ratio_median': med['mgd3'] / med['bare'],
                      'torch_threads': torch.get_num_threads()}, indent=1))


if __name__ == '__main__':
    main()
