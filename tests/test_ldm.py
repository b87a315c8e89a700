"""The LDM backbone against an independent re-implementation of CompVis's class-conditional latent diffusion.

The reference below is written here, from CompVis/latent-diffusion's structure (openaimodel's `UNetModel` with
`SpatialTransformer` cross-attention, `ClassEmbedder`, `VQModelInterface` with model.py's Encoder/Decoder and taming's
quantiser, ddpm.py's `make_beta_schedule('linear')`), at toy widths. Its random state dict, under CompVis's own key
names, is converted by `mgd3.ldm.convert_compvis_ldm`; the converted diffusers models must give the reference's ε,
latents and images. A deliberately wrong conversion (a parametrised perturbation of the converted weights) must fail."""
import argparse, math
import pytest
import torch
import torch.nn.functional as F
from torch import nn
import mgd3
from mgd3.ldm import convert_compvis_ldm, load_ldm_backbone, read_compvis_checkpoint
from mgd3.testing import compvis_ldm_state_dict, imagenet_tree, tiny_ldm, tiny_ldm_config

# ---------------------------------------------------------------- the reference (CompVis's structure)
def timestep_embedding(t, dim, max_period=10000):   # openaimodel / diffusionmodules.util
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)

class ResBlock(nn.Module):
    def __init__(self, ch, out, emb):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, out))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out), nn.SiLU(), nn.Dropout(0),
                                        nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if ch == out else nn.Conv2d(ch, out, 1)
    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)

class CrossAttention(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.to_q, self.to_k = nn.Linear(dim, dim, bias=False), nn.Linear(ctx_dim, dim, bias=False)
        self.to_v, self.to_out = nn.Linear(ctx_dim, dim, bias=False), nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0))
    def forward(self, x, context=None):
        context = x if context is None else context
        split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)
        q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        w = (q @ k.transpose(-1, -2) * self.scale).softmax(-1)
        return self.to_out((w @ v).transpose(1, 2).reshape(x.shape))

class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)
    def forward(self, x):
        x, gate = self.proj(x).chunk(2, -1)
        return x * F.gelu(gate)

class TransformerBlock(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.attn1, self.attn2 = CrossAttention(dim, dim, heads), CrossAttention(dim, ctx_dim, heads)
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0), nn.Linear(4 * dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff.net(self.norm3(x)) + x

class SpatialTransformer(nn.Module):
    def __init__(self, ch, ctx_dim, heads, depth):
        super().__init__()
        self.norm = nn.GroupNorm(32, ch, eps=1e-6)
        self.proj_in, self.proj_out = nn.Conv2d(ch, ch, 1), nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList(TransformerBlock(ch, ctx_dim, heads) for _ in range(depth))
    def forward(self, x, context):
        b, c, h, w = x.shape
        y = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)
        for blk in self.transformer_blocks: y = blk(y, context)
        return self.proj_out(y.transpose(1, 2).reshape(b, c, h, w)) + x

class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
    def forward(self, x): return self.op(x)

class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)
    def forward(self, x): return self.conv(F.interpolate(x, scale_factor=2, mode='nearest'))

class Seq(nn.Sequential):   # TimestepEmbedSequential
    def forward(self, x, emb, context):
        for m in self:
            x = m(x, emb) if isinstance(m, ResBlock) else m(x, context) if isinstance(m, SpatialTransformer) else m(x)
        return x

class RefUNet(nn.Module):
    "openaimodel.UNetModel (use_spatial_transformer, num_head_channels = -1) at any width."
    def __init__(self, u):
        super().__init__()
        mc, ctx, depth, nrb = u['model_channels'], u['context_dim'], u['transformer_depth'], u['num_res_blocks']
        heads, ted, self.mc = u['num_heads'], 4 * u['model_channels'], mc
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.input_blocks = nn.ModuleList([Seq(nn.Conv2d(u['in_channels'], mc, 3, padding=1))])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(u['channel_mult']):
            for _ in range(nrb):
                layers, ch = [ResBlock(ch, m * mc, ted)], m * mc
                if ds in u['attention_resolutions']: layers.append(SpatialTransformer(ch, ctx, heads, depth))
                self.input_blocks.append(Seq(*layers))
                chans.append(ch)
            if level != len(u['channel_mult']) - 1:
                self.input_blocks.append(Seq(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq(ResBlock(ch, ch, ted), SpatialTransformer(ch, ctx, heads, depth), ResBlock(ch, ch, ted))
        self.output_blocks = nn.ModuleList()
        for level, m in reversed(list(enumerate(u['channel_mult']))):
            for i in range(nrb + 1):
                layers, ch = [ResBlock(ch + chans.pop(), m * mc, ted)], m * mc
                if ds in u['attention_resolutions']: layers.append(SpatialTransformer(ch, ctx, heads, depth))
                if level and i == nrb:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Seq(*layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(mc, u['out_channels'], 3, padding=1))
    def forward(self, x, t, context):
        emb = self.time_embed(timestep_embedding(t, self.mc).to(x.dtype))
        hs, h = [], x
        for m in self.input_blocks:
            h = m(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for m in self.output_blocks: h = m(torch.cat([h, hs.pop()], 1), emb, context)
        return self.out(h)

def gn(c): return nn.GroupNorm(32, c, eps=1e-6)   # model.py's Normalize

class VQRes(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.norm1, self.conv1 = gn(i), nn.Conv2d(i, o, 3, padding=1)
        self.norm2, self.conv2 = gn(o), nn.Conv2d(o, o, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(i, o, 1) if i != o else nn.Identity()
    def forward(self, x):
        return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))

class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm, self.q, self.k, self.v, self.proj_out = gn(c), *(nn.Conv2d(c, c, 1) for _ in range(4))
    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (f(y).reshape(b, c, h * w) for f in (self.q, self.k, self.v))
        a = (q.transpose(1, 2) @ k * c ** -0.5).softmax(2)          # [b, hw(q), hw(k)]
        return x + self.proj_out((v @ a.transpose(1, 2)).reshape(b, c, h, w))

def _mid(c):
    m = nn.Module()
    m.block_1, m.attn_1, m.block_2 = VQRes(c, c), AttnBlock(c), VQRes(c, c)
    return m

class RefVQ(nn.Module):
    "VQModelInterface: encode = quant_conv(Encoder(x)); decode = Decoder(post_quant_conv(quantise(h)))."
    def __init__(self, p):
        super().__init__()
        dd = p['ddconfig']
        ch, mult, nrb, z = dd['ch'], dd['ch_mult'], dd['num_res_blocks'], dd['z_channels']
        enc, dec = nn.Module(), nn.Module()
        enc.conv_in, enc.down, c = nn.Conv2d(dd['in_channels'], ch, 3, padding=1), nn.ModuleList(), ch
        for i, m in enumerate(mult):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            for _ in range(nrb):
                lvl.block.append(VQRes(c, ch * m))
                c = ch * m
            if i != len(mult) - 1: lvl.downsample = nn.Module(); lvl.downsample.conv = nn.Conv2d(c, c, 3, stride=2)
            enc.down.append(lvl)
        enc.mid, enc.norm_out, enc.conv_out = _mid(c), gn(c), nn.Conv2d(c, z, 3, padding=1)
        self.quant_conv, self.post_quant_conv = nn.Conv2d(z, p['embed_dim'], 1), nn.Conv2d(p['embed_dim'], z, 1)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(p['n_embed'], p['embed_dim'])
        c = ch * mult[-1]
        dec.conv_in, dec.mid, ups = nn.Conv2d(z, c, 3, padding=1), _mid(c), {}
        for i, m in reversed(list(enumerate(mult))):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            for _ in range(nrb + 1):
                lvl.block.append(VQRes(c, ch * m))
                c = ch * m
            if i: lvl.upsample = Upsample(c)
            ups[i] = lvl
        dec.up = nn.ModuleList(ups[i] for i in range(len(mult)))
        dec.norm_out, dec.conv_out = gn(c), nn.Conv2d(c, dd['out_ch'], 3, padding=1)
        self.encoder, self.decoder = enc, dec
    @staticmethod
    def _mid_fwd(m, h): return m.block_2(m.attn_1(m.block_1(h)))
    def encode(self, x):
        e, h = self.encoder, self.encoder.conv_in(x)
        for i, lvl in enumerate(e.down):
            for b in lvl.block: h = b(h)
            if hasattr(lvl, 'downsample'): h = lvl.downsample.conv(F.pad(h, (0, 1, 0, 1)))
        return self.quant_conv(e.conv_out(F.silu(e.norm_out(self._mid_fwd(e.mid, h)))))
    def quantise(self, h):
        zf, emb = h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]), self.quantize.embedding.weight
        d = (zf ** 2).sum(1, keepdim=True) + (emb ** 2).sum(1) - 2 * zf @ emb.t()
        return emb[d.argmin(1)].reshape(h.shape[0], h.shape[2], h.shape[3], -1).permute(0, 3, 1, 2)
    def decode(self, h):
        d = self.decoder
        x = self._mid_fwd(d.mid, d.conv_in(self.post_quant_conv(self.quantise(h))))
        for lvl in reversed(d.up):
            for b in lvl.block: x = b(x)
            if hasattr(lvl, 'upsample'): x = lvl.upsample(x)
        return d.conv_out(F.silu(d.norm_out(x)))

def make_beta_schedule_linear(n, linear_start, linear_end):   # ddpm.py / diffusionmodules.util, schedule 'linear'
    return torch.linspace(linear_start ** 0.5, linear_end ** 0.5, n, dtype=torch.float64) ** 2

def sub(sd, prefix): return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}

# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope='module', params=[1, 2], ids=['heads1', 'heads2'])
def pair(request, tmp_path_factory):
    "(reference U-Net, reference VQ, class table, the converted backbone): one random CompVis LDM, two ways."
    cfg = tiny_ldm_config(latent_size=8, n_classes=11, num_heads=request.param)
    sd = compvis_ldm_state_dict(cfg, seed=request.param)
    unet, vq = RefUNet(cfg['unet_config']['params']).eval(), RefVQ(cfg['first_stage_config']['params']).eval()
    unet.load_state_dict(sub(sd, 'model.diffusion_model.'), strict=True)   # the fixture's keys are CompVis's own
    vq.load_state_dict(sub(sd, 'first_stage_model.'), strict=True)
    dest = convert_compvis_ldm(sd, tmp_path_factory.mktemp('ldm'), cfg, class_names=[f'c{i}' for i in range(10)])
    return unet, vq, sd['cond_stage_model.embedding.weight'], load_ldm_backbone(dest, device='cpu'), cfg

def ref_eps(unet, table, x, t, y):
    return unet(x, torch.full((len(x),), t), table[y][:, None])   # ClassEmbedder: [B, 1, D]

# ---------------------------------------------------------------- fidelity
@torch.no_grad()
def test_converted_unet_gives_compvis_eps(pair):
    unet, _, table, bb, _ = pair
    x, y = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 9, 10])
    for t in (0, 37, 500, 999):
        ref = ref_eps(unet, table, x, t, y)
        got = bb.make_denoiser(guidance_scale=1)(x, t, y)[0]
        assert (got - ref).abs().max() < 1e-5 * max(1, ref.abs().max()), t

@torch.no_grad()
def test_classifier_free_guidance_on_the_null_class(pair):
    unet, _, table, bb, _ = pair
    x, y, t = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 2, 7]), 420
    cond, uncond = ref_eps(unet, table, x, t, y), ref_eps(unet, table, x, t, torch.full_like(y, 10))
    eps, var = bb.make_denoiser(3.0, None)(x, t, y)
    assert var is None and bb.null_class == 10 and bb.num_classes == 10
    torch.testing.assert_close(eps, uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)

@torch.no_grad()
def test_vq_encode_decode_match_compvis(pair):
    _, vq, _, bb, _ = pair
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    h = vq.encode(img)
    torch.testing.assert_close(bb.encode(img), h * bb.scaling_factor, atol=1e-5, rtol=1e-5)
    dec = (vq.decode(h).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(bb.decode(h), dec, atol=1e-5, rtol=1e-5)
    assert bb.scaling_factor == 1.0 and bb.vae.encode(img).latent_dist.sample() is not None

def test_scheduler_is_ldms_linear_schedule(pair):
    *_, bb, cfg = pair
    ref = make_beta_schedule_linear(cfg['timesteps'], cfg['linear_start'], cfg['linear_end'])
    torch.testing.assert_close(bb.scheduler.betas.double(), ref, atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(bb.scheduler.alphas_cumprod.double(), torch.cumprod(1 - ref, 0), atol=1e-7, rtol=1e-6)
    assert bb.scheduler.config.prediction_type == 'epsilon' and bb.scheduler.config.beta_schedule == 'scaled_linear'

def _swap_qk(unet):   # a conversion that swaps a self-attention's query and key weights
    a = unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    a.to_q.weight, a.to_k.weight = a.to_k.weight, a.to_q.weight

def _transpose_out(unet):   # a conversion that transposes a square weight (the mid block's self-attention output)
    w = unet.mid_block.attentions[0].transformer_blocks[0].attn1.to_out[0].weight
    w.data = w.data.t().contiguous()

def _swap_resnets(unet):   # a conversion that mixes up two same-shaped res blocks' first convolutions
    a, b = unet.mid_block.resnets
    a.conv1.weight, b.conv1.weight = b.conv1.weight, a.conv1.weight

@pytest.mark.parametrize('perturb', [_swap_qk, _transpose_out, _swap_resnets], ids=lambda f: f.__name__)
@torch.no_grad()
def test_negative_control_a_wrong_conversion_fails(tmp_path, perturb):
    cfg = tiny_ldm_config(latent_size=8, n_classes=11)
    sd = compvis_ldm_state_dict(cfg, seed=5)
    unet = RefUNet(cfg['unet_config']['params']).eval()
    unet.load_state_dict(sub(sd, 'model.diffusion_model.'))
    bb = load_ldm_backbone(convert_compvis_ldm(sd, tmp_path / 'ldm', cfg, class_names=list('abcdefghij')), device='cpu')
    x, y, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 4]), 300
    ref = ref_eps(unet, sd['cond_stage_model.embedding.weight'], x, t, y)
    assert (bb.make_denoiser(1)(x, t, y)[0] - ref).abs().max() < 1e-5      # right before the perturbation
    perturb(bb.unet)
    assert (bb.make_denoiser(1)(x, t, y)[0] - ref).abs().max() > 1e-3      # the comparison catches it

# ---------------------------------------------------------------- the checkpoint, the config, the folder
def test_checkpoint_files_and_bad_input(tmp_path):
    from safetensors.torch import save_file
    cfg = tiny_ldm_config(latent_size=8, n_classes=11)
    sd = compvis_ldm_state_dict(cfg)
    save_file(sd, str(tmp_path / 'm.safetensors'))
    torch.save({'state_dict': sd}, tmp_path / 'm.ckpt')
    a, b = read_compvis_checkpoint(tmp_path / 'm.safetensors'), read_compvis_checkpoint(tmp_path / 'm.ckpt')
    assert a.keys() == b.keys() == sd.keys() and all(torch.equal(a[k], b[k]) for k in sd)
    torch.save({'state_dict': sd, 'hparams': argparse.Namespace(lr=1)}, tmp_path / 'lightning.ckpt')   # beyond tensors
    with pytest.raises(ValueError, match='weights_only=True'): read_compvis_checkpoint(tmp_path / 'lightning.ckpt')
    with pytest.raises(FileNotFoundError, match='no checkpoint'): read_compvis_checkpoint(tmp_path / 'nope.ckpt')
    wrong = {**cfg, 'unet_config': {'params': {**cfg['unet_config']['params'], 'num_res_blocks': 2}}}
    with pytest.raises(ValueError, match='does not match its config'): convert_compvis_ldm(sd, tmp_path / 'x', wrong)
    with pytest.raises(ValueError, match='class names'): convert_compvis_ldm(sd, tmp_path / 'y', cfg, class_names=['a'])
    with pytest.raises(FileNotFoundError, match='convert_compvis_ldm'): load_ldm_backbone(tmp_path)
    with pytest.raises(ValueError, match='vae='): mgd3.load_backbone(f'ldm:{tmp_path}', vae=str(tmp_path))

def test_kind_and_its_run_defaults():
    from mgd3.backbone import backbone_entry
    e = backbone_entry('ldm:/models/cin256-v2')
    assert (e.kind.name, e.kind.prefix, str(e.source)) == ('ldm', 'ldm', '/models/cin256-v2')
    r = mgd3.DistillConfig(backbone='ldm:/models/cin256-v2').resolved()
    assert (r.guidance_scale, r.stop_rule, r.save_size) == (3.0, 'index', None)
    assert e.kind.mode_latents == 'mean' and isinstance(mgd3.ldm.CIN256_V2, dict)

def test_cin256_v2_config_gives_its_diffusers_shapes():
    from mgd3.ldm import compvis_config, ldm_unet_config, ldm_vq_config
    p = compvis_config()
    u, v = ldm_unet_config(p), ldm_vq_config(p)
    assert u['block_out_channels'] == (192, 384, 576, 960) and u['attention_head_dim'] == 1
    assert u['down_block_types'] == ('DownBlock2D',) + ('CrossAttnDownBlock2D',) * 3
    assert u['up_block_types'] == ('CrossAttnUpBlock2D',) * 3 + ('UpBlock2D',)
    assert (u['cross_attention_dim'], u['sample_size']) == (512, 64)
    assert (v['block_out_channels'], v['latent_channels'], v['num_vq_embeddings'], v['scaling_factor']) == \
        ((128, 256, 512), 3, 8192, 1.0)

# ---------------------------------------------------------------- the whole pipeline
def test_distill_runs_unguided_and_mgd3_on_a_tiny_ldm(tmp_path):
    folder = tiny_ldm(tmp_path / 'ldm', latent_size=8)
    root = imagenet_tree(tmp_path / 'tree', train_per_class=2, val_per_class=1)
    r = mgd3.distill(backbone=f'ldm:{folder}', dataset='imagenette', data_root=str(root), ipc=1, seeds=[0],
                     methods=['unguided', 'mgd3'], num_inference_steps=2, stop_t=1, epochs=1, nets=['convnet3'],
                     out_dir=str(tmp_path / 'run'), device='cpu', mode_flips='none')
    assert set(r.metrics['methods']) == {'unguided', 'mgd3'} and r.config.guidance_scale == 3.0
    run = mgd3.Run.load(r.out_dir)
    assert run.modes(0).centroids.shape == (10, 1, 3, 8, 8)
    pngs = sorted((r.out_dir / 'images' / 'mgd3' / 'seed0').rglob('*.png'))
    assert len(pngs) == 10

def test_cin256_v2_full_size_layout_converts_key_for_key():
    "Every weight of cin256-v2's real layout (shapes only, on the meta device) maps onto the diffusers models' own."
    from diffusers import UNet2DConditionModel, VQModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from mgd3.ldm import compvis_config, ldm_unet_config, ldm_vq_config
    from mgd3.testing import _compvis_unet_shapes, _compvis_vq_shapes
    p = compvis_config()
    src = {**{f'model.diffusion_model.{k}': torch.empty(s, device='meta')
              for k, s in _compvis_unet_shapes(p['unet_config']['params']).items()},
           **{f'first_stage_model.{k}': torch.empty(s, device='meta')
              for k, s in _compvis_vq_shapes(p['first_stage_config']['params']).items()}}
    with torch.device('meta'):
        unet, vq = UNet2DConditionModel(**ldm_unet_config(p)), VQModel(**ldm_vq_config(p))
    u = convert_ldm_unet_checkpoint(src, ldm_unet_config(p))
    v = {**convert_ldm_vae_checkpoint(src, ldm_vq_config(p)),
         'quantize.embedding.weight': src['first_stage_model.quantize.embedding.weight']}
    for got, model in ((u, unet), (v, vq)):
        want = {k: tuple(t.shape) for k, t in model.state_dict().items()}
        assert {k: tuple(t.shape) for k, t in got.items()} == want
    assert len(u) == sum(k.startswith('model.diffusion_model.') for k in src)
    assert sum(t.numel() for t in unet.parameters()) > 300e6   # the real U-Net's size (about 400M parameters)

@pytest.mark.slow
def test_rehearsal_at_cin256_shapes_runs_the_table1_preset(tmp_path):
    "The rehearsal LDM (3 × 64 × 64 latents, 256 px, 1000 classes + null) through Table 1's preset (about 70 s)."
    from PIL import Image
    from mgd3.backbone import BACKBONE_KINDS
    from mgd3.testing import REHEARSAL, _REHEARSAL_BACKBONES
    backbone = _REHEARSAL_BACKBONES['ldm'](BACKBONE_KINDS.get('ldm'), tmp_path)
    r = mgd3.distill(**{**REHEARSAL, 'preset': 'table1-imagenette', 'backbone': backbone,
                        'out_dir': str(tmp_path / 'run'), 'data_root': str(imagenet_tree(tmp_path / 'tree'))})
    assert set(r.metrics['methods']) == {'random_real', 'unguided', 'mgd3'} and r.config.guidance_scale == 3.0
    assert mgd3.Run.load(r.out_dir).modes(0).centroids.shape == (10, 1, 3, 64, 64)
    pngs = sorted((r.out_dir / 'images' / 'mgd3' / 'seed0').rglob('*.png'))
    assert len(pngs) == 10 and Image.open(pngs[0]).size == (256, 256)

def test_the_checkpoints_own_schedule_and_scale_factor(tmp_path):
    "A config whose β schedule is not the checkpoint's `betas` is refused; a `scale_factor` buffer wins (scale_by_std)."
    cfg = tiny_ldm_config(latent_size=8, n_classes=11)
    sd = compvis_ldm_state_dict(cfg)
    with pytest.raises(ValueError, match='betas buffer'):
        convert_compvis_ldm(sd, tmp_path / 'a', {**cfg, 'linear_start': 1e-4, 'linear_end': 2e-2})
    bb = load_ldm_backbone(convert_compvis_ldm({**sd, 'scale_factor': torch.tensor(0.25)}, tmp_path / 'b', cfg,
                                               class_names=list('abcdefghij')), device='cpu')
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    assert bb.scaling_factor == 0.25
    torch.testing.assert_close(bb.encode(img), 0.25 * bb.vae.encode(img).latent_dist.mean)

@torch.no_grad()
def test_sampling_an_ldm_is_bit_identical_for_any_batch_size(pair):
    from mgd3.sampler import generate
    bb, kw = pair[3], dict(num_inference_steps=3, variance='scheduler', progress=False, decode=False)
    a = generate(bb, [1, 7, 3], seeds=[0, 1, 2], batch_size=3, **kw).latents
    b = generate(bb, [1, 7, 3], seeds=[0, 1, 2], batch_size=1, **kw).latents
    assert torch.equal(a, b)

@torch.no_grad()
def test_negative_control_a_wrong_vq_conversion_fails(tmp_path):
    "The VQ comparison catches a conversion that transposes the quant conv's (square, 3 × 3) weight."
    cfg = tiny_ldm_config(latent_size=8, n_classes=11)
    sd = compvis_ldm_state_dict(cfg, seed=6)
    vq = RefVQ(cfg['first_stage_config']['params']).eval()
    vq.load_state_dict(sub(sd, 'first_stage_model.'))
    bb = load_ldm_backbone(convert_compvis_ldm(sd, tmp_path / 'ldm', cfg, class_names=list('abcdefghij')), device='cpu')
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert (bb.encode(img) - vq.encode(img)).abs().max() < 1e-5
    w = bb.vae.vq.quant_conv.weight
    w.data = w.data.transpose(0, 1).contiguous()
    assert (bb.encode(img) - vq.encode(img)).abs().max() > 1e-3
