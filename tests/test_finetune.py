"""Fine-tuning (mgd3.finetune): one MinMaxDiff training step against an independent implementation of the authors'
step (vimar-gu/MinimaxDiffusion `train_dit.py` + ADM/DiT `GaussianDiffusion.training_losses`), with negative controls,
and a killed fine-tune that resumes to the uninterrupted result."""
import json, math
from collections import defaultdict
from dataclasses import replace
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
import mgd3.finetune as ft
from mgd3.losses import DiffusionTerms
from mgd3.pretrain import DiTConfig, make_dit

TINY = DiTConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, seed=0)


# --- the authors' step, written independently (their formulas, float64 numpy tables as in ADM) ----------------------
class _Theirs:
    def __init__(self, lam_pos=0.002, lam_neg=0.008, mem=64, perturb='none'):
        b = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
        ac = np.cumprod(1 - b)
        acp = np.append(1.0, ac[:-1])
        self.b, self.ac = b, ac
        self.pv = b * (1 - acp) / (1 - ac)
        self.plv = np.log(np.append(self.pv[1], self.pv[1:]))
        self.c1, self.c2 = b * np.sqrt(acp) / (1 - ac), (1 - acp) * np.sqrt(1 - b) / (1 - ac)
        self.lam_pos, self.lam_neg, self.mem, self.perturb = lam_pos, lam_neg, mem, perturb
        self.real, self.pseudo = defaultdict(list), defaultdict(list)

    def ex(self, arr, t, shape):
        r = torch.from_numpy(arr)[t].float()
        while r.ndim < len(shape): r = r[..., None]
        return r + torch.zeros(shape)

    def vb(self, x0, xt, t, out):
        C = x0.shape[1]
        eps, v = out[:, :C], out[:, C:]
        true_mean = self.ex(self.c1, t, xt.shape) * x0 + self.ex(self.c2, t, xt.shape) * xt
        true_lv = self.ex(self.plv, t, xt.shape)
        frac = (v + 1) / 2
        lv = frac * self.ex(np.log(self.b), t, xt.shape) + (1 - frac) * true_lv
        px0 = self.ex(np.sqrt(1 / self.ac), t, xt.shape) * xt - self.ex(np.sqrt(1 / self.ac - 1), t, xt.shape) * eps
        mean = self.ex(self.c1, t, xt.shape) * px0 + self.ex(self.c2, t, xt.shape) * xt
        kl = 0.5 * (-1 + lv - true_lv + torch.exp(true_lv - lv) + (true_mean - mean) ** 2 * torch.exp(-lv))
        kl = kl.mean(dim=list(range(1, kl.ndim))) / np.log(2.0)
        cdf = lambda z: 0.5 * (1 + torch.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * torch.pow(z, 3))))
        cx, inv = x0 - mean, torch.exp(-0.5 * lv)
        cp, cm = cdf(inv * (cx + 1 / 255)), cdf(inv * (cx - 1 / 255))
        lp = torch.where(x0 < -0.999, torch.log(cp.clamp(min=1e-12)),
                         torch.where(x0 > 0.999, torch.log((1 - cm).clamp(min=1e-12)),
                                     torch.log((cp - cm).clamp(min=1e-12))))
        nll = (-lp).mean(dim=list(range(1, lp.ndim))) / np.log(2.0)
        return torch.where(t == 0, nll, kl)

    def step(self, model, x, y, ry, t, noise):
        "training_losses(model, x, t, dict(y=y), noise) + the --condense criteria; returns (loss, pos, neg, all)."
        xt = self.ex(np.sqrt(self.ac), t, x.shape) * x + self.ex(np.sqrt(1 - self.ac), t, x.shape) * noise
        out = model(xt, timestep=t, class_labels=y).sample
        C = x.shape[1]
        eps, v = out[:, :C], out[:, C:]
        vb = self.vb(x, xt, t, torch.cat([eps.detach(), v], 1))
        output = self.ex(np.sqrt(1 / self.ac), t, xt.shape) * xt - self.ex(np.sqrt(1 / self.ac - 1), t, xt.shape) * eps
        mse = ((noise - eps) ** 2).mean(dim=(1, 2, 3))
        loss = (mse + vb).mean()
        pos, neg = torch.tensor(0.), torch.tensor(0.)
        ry = ry.numpy()
        lp, ln = self.lam_pos, self.lam_neg
        if self.perturb == 'lambda_pos': lp = 2 * lp
        if self.perturb == 'lambda_neg': ln = 0.5 * ln
        for c in set(ry):
            if len(self.pseudo[c]):
                pe, ne = torch.cat(self.real[c]).flatten(1), torch.cat(self.pseudo[c]).flatten(1)
                a = output[ry == c].flatten(1)
                cs = lambda u, w: (u @ w.T) / (torch.norm(u, dim=-1).view(-1, 1).repeat(1, len(w))
                                               * torch.norm(w, dim=-1).view(1, -1).repeat(len(u), 1))
                p_sim = 1 - (cs(a, pe).max() if self.perturb == 'min_to_max' else cs(a, pe).min())
                n_sim = cs(a, ne).max()
                if self.perturb == 'sign_neg': n_sim = -n_sim
                pos = pos + p_sim * lp / len(set(ry))
                neg = neg + n_sim * ln / len(set(ry))
            self.real[c].extend(x[ry == c].detach().split(1))
            self.pseudo[c].extend(output[ry == c].detach().split(1))
            while len(self.real[c]) > self.mem: self.real[c].pop(0)
            while len(self.pseudo[c]) > self.mem: self.pseudo[c].pop(0)
        return loss, pos, neg, loss + pos + neg


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, 8, 8, generator=g) * 0.8
    ry = torch.tensor([0, 1, 0, 2, 1, 0])
    y = torch.where(torch.rand(6, generator=g) < 0.2, 10, ry + 3)   # backbone ids ≠ dataset classes, some dropped
    t = torch.tensor([0, 1, 250, 500, 998, 999]) if seed == 0 else torch.randint(1000, (6,), generator=g)
    return x, y, ry, t, torch.randn(6, 4, 8, 8, generator=g)


@pytest.mark.parametrize('perturb', ['none', 'lambda_pos', 'lambda_neg', 'sign_neg', 'min_to_max'])
def test_minimax_step_matches_the_authors_step(perturb):
    "Losses and Difffit gradients of mgd3's step equal theirs on the second step (memories filled by the first)."
    terms = DiffusionTerms.from_scheduler(DDPMScheduler(beta_schedule='linear', beta_start=1e-4, beta_end=0.02))
    ours_m, theirs_m = make_dit(TINY, 10), make_dit(TINY, 10)
    torch.manual_seed(1)
    with torch.no_grad():   # non-trivial weights (adaLN-Zero starts at zero), identical in both
        for p in ours_m.parameters(): p.add_(0.05 * torch.randn_like(p))
    theirs_m.load_state_dict(ours_m.state_dict())
    params = ft.mark_trainable(ours_m, 'difffit')
    ft.mark_trainable(theirs_m, 'difffit')
    mem, theirs = ft.ClassMemory(64), _Theirs(perturb=perturb)
    for seed in (0, 1):
        x, y, ry, t, noise = _batch(seed)
        s = ft.finetune_losses(ours_m, x, y, t, noise, terms, 1e-3, ry, mem, 0.002, 0.008)
        r = theirs.step(theirs_m, x, y, ry, t, noise)
    for m in (ours_m, theirs_m): m.zero_grad()
    s.total.backward(); r[3].backward()
    got = torch.stack([s.diffusion, s.pos, s.neg, s.total]).detach()
    want = torch.stack(r).detach()
    assert got[1] > 0 and got[2] > 0   # both terms are active on the second step
    grads = [(p.grad, q.grad) for p, q in zip(ours_m.parameters(), theirs_m.parameters()) if p.requires_grad]
    same = torch.allclose(got, want, rtol=1e-4, atol=1e-7) and all(
        torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in grads)
    assert len(grads) == len(params)
    assert same == (perturb == 'none'), (perturb, got, want)


def test_difffit_subset_is_the_original_dits():
    "Every bias, the label tables; no weight matrix (the original DiT's norms have no affine parameters)."
    m = make_dit(TINY, 10)
    names = ft.difffit_names(m)
    on = {n for n, v in names.items() if v}
    assert on == {n for n in names if n.endswith('.bias') or 'class_embedder' in n}


def _data():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 4, 4, 4, generator=g)
    return ft.FinetuneData(z, z.flip(-1), torch.arange(16) % 3, torch.arange(16) % 3)


def _run(cfg, ckpt=None):
    terms = DiffusionTerms.from_scheduler(DDPMScheduler(beta_schedule='linear'))
    m = make_dit(TINY, 3, latent_size=4)
    return ft.finetune_transformer(m, _data(), terms, cfg, null_class=3, ckpt_path=ckpt, progress=False)


def test_killed_finetune_resumes_to_the_same_result(tmp_path, monkeypatch):
    "A MinMaxDiff fine-tune killed mid-run resumes from its last checkpoint (memories included) bit-exactly."
    cfg = replace(ft.MINIMAX, epochs=2, batch_size=4, checkpoint_every=3, mixed_precision='no', ema_decay=0.9)
    ema, log = _run(cfg)
    assert len(log['loss']) == 8 and log['pos'][-1] > 0
    real, calls = ft.finetune_losses, []
    def dies_at_step_6(*a, **k):
        calls.append(1)
        if len(calls) == 6: raise KeyboardInterrupt   # killed during step 6 (checkpoint at 3)
        return real(*a, **k)
    monkeypatch.setattr(ft, 'finetune_losses', dies_at_step_6)
    with pytest.raises(KeyboardInterrupt): _run(cfg, tmp_path/'ck.safetensors')
    monkeypatch.setattr(ft, 'finetune_losses', real)
    ema2, log2 = _run(cfg, tmp_path/'ck.safetensors')
    assert log2['loss'] == log['loss'] and log2['pos'] == log['pos']
    sd, sd2 = ema.state_dict(), ema2.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    with pytest.raises(ValueError, match='another configuration'): _run(replace(cfg, lr=0.1), tmp_path/'ck.safetensors')


def test_tied_embedders_train_as_one_and_save_untied():
    "A DiT whose blocks hold equal embedder copies (converted DiT-XL/2) trains one shared embedder."
    terms = DiffusionTerms.from_scheduler(DDPMScheduler(beta_schedule='linear'))
    m = make_dit(TINY, 3, latent_size=4)
    for b in m.transformer_blocks[1:]: b.norm1.emb.load_state_dict(m.transformer_blocks[0].norm1.emb.state_dict())
    ema, log = ft.finetune_transformer(m, _data(), terms, ft.FinetuneConfig(steps=2, batch_size=4,
                                       mixed_precision='no'), null_class=3, progress=False)
    assert log['tied_embedders']
    e0, e1 = (b.norm1.emb for b in ema.transformer_blocks)
    assert e0 is not e1 and all(torch.equal(a, b) for a, b in zip(e0.state_dict().values(), e1.state_dict().values()))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match='cannot fill one batch'):
        _run(ft.FinetuneConfig(batch_size=64, mixed_precision='no'))
    with pytest.raises(ValueError, match='trainable'): _run(ft.FinetuneConfig(trainable='lora'))
    assert math.isclose(ft.MINIMAX.lambda_pos, 0.002) and ft.MINIMAX.memory_size == 64


@pytest.mark.slow
def test_minimax_method_runs_and_reuses_its_finetune(tmp_path):
    "`distill(methods=['minimax'])` fine-tunes once into the run folder, samples from it, and a rerun reuses it."
    from mgd3.distill import distill
    from mgd3.testing import TINY_RUN
    from mgd3.core import load_json
    out = tmp_path/'run'
    distill(**{**TINY_RUN, 'methods': ['unguided', 'minimax'], 'out_dir': str(out)})
    model = out/'finetune'/'minimax'/'classes0-9'
    card = load_json(model/'finetune.json')
    assert card['config']['lambda_pos'] == 0.002 and card['config']['flips'] is False and card['log']['pos'][-1] > 0
    a = sorted((out/'images'/'minimax').rglob('*.png'))
    b = sorted((out/'images'/'unguided').rglob('*.png'))
    assert len(a) == len(b) == 20 and any(x.read_bytes() != y.read_bytes() for x, y in zip(a, b))
    stamp = (model/'transformer'/'diffusion_pytorch_model.safetensors').stat().st_mtime_ns
    for p in a[:3] + [out/'metrics.json']: p.unlink()   # an unfinished run remakes its missing images from the model
    distill(**{**TINY_RUN, 'methods': ['unguided', 'minimax'], 'out_dir': str(out)})
    assert (model/'transformer'/'diffusion_pytorch_model.safetensors').stat().st_mtime_ns == stamp
    assert len(list((out/'images'/'minimax').rglob('*.png'))) == 20


def _mgd3(*args):
    import shutil, subprocess, sys
    from pathlib import Path
    exe = Path(sys.executable).parent/'mgd3'
    exe = str(exe if exe.exists() else shutil.which('mgd3'))
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"mgd3 {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_a_folder_of_images_goes_through_the_cli(tmp_path):
    "validate → finetune → distill --dataset folder → export, all from the command line, on a folder the test writes."
    from PIL import Image
    import mgd3
    root, rng = tmp_path/'shapes', np.random.default_rng(0)
    for split, n in (('train', 8), ('val', 3)):
        for c, name in enumerate(('circles', 'squares')):
            d = root/split/name
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 60, (32, 32)).astype(np.uint8)
                a[8:24, 8:24] += np.uint8(120 + 60 * c)
                Image.fromarray(a).save(d/f'{i}.png')
    (root/'classes.txt').write_text('circles\tround things\nsquares\tsquare things\n')
    assert 'PROBLEMS' not in _mgd3('validate', root, '--dataset', 'folder')
    ft_dir = tmp_path/'shapes-dit'
    out = _mgd3('finetune', '--backbone', 'tiny-mnist', '--dataset', 'folder', '--data-root', root, '--out', ft_dir,
                '--steps', 3, '--batch-size', 4, '--no-flips', '--device', 'cpu')
    assert out.strip().endswith(str(ft_dir)) and (ft_dir/'README.md').exists()
    run = tmp_path/'run'
    _mgd3('distill', '--dataset', 'folder', '--data_root', root, '--backbone', ft_dir, '--ipc', 2, '--seeds', 0,
          '--num_inference_steps', 4, '--stop_t', 2, '--epochs', 1, '--quick', '--methods', 'mgd3',
          '--out_dir', run, '--device', 'cpu')
    man = json.loads((run/'manifest.json').read_text())
    assert man['status'] == 'complete' and man['config']['dataset'] == f'folder:{root}'
    dest = tmp_path/'export'
    assert _mgd3('export', run, '--method', 'mgd3', '--dest', dest).strip() == str(dest)
    s = mgd3.load_distilled(dest)
    assert len(s.rows) == 4


def test_folder_dataset_parameters(tmp_path):
    "dataset='folder' + data_root and dataset='folder:<root>' name the same dataset; bad folders are refused clearly."
    from PIL import Image
    from mgd3.config import DistillConfig
    from mgd3.data import dataset_spec, teacher_columns
    for c in ('cats', 'dogs'):
        (tmp_path/'pets'/'train'/c).mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path/'pets'/'train'/c/'0.png')
    a = DistillConfig(dataset='folder', data_root=str(tmp_path/'pets')).resolved()
    b = DistillConfig(dataset=f"folder:{tmp_path/'pets'}").resolved()
    assert a.dataset == b.dataset and a.data_root == b.data_root and a.out_dir == b.out_dir == 'runs/pets-ipc10'
    spec = dataset_spec(a.dataset)
    assert spec.wnids == ('cats', 'dogs') and spec.channels == 3 and spec.image_size == 16 and not spec.imagenet
    with pytest.raises(ValueError, match='not an ImageNet subset'): teacher_columns(spec, 1000)   # ImageNet teacher
    with pytest.raises(ValueError, match='needs data_root'): DistillConfig(dataset='folder').resolved()
    (tmp_path/'pets'/'classes.txt').write_text('cats only a name without a tab\n')
    with pytest.raises(ValueError, match='TAB'): dataset_spec(a.dataset)
