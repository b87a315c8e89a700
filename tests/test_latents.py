"""VAE encoding with a tiny random AutoencoderKL, and the per-class latent cache: reuse, resume, invalidation."""
import json
import numpy as np, pytest, torch
from PIL import Image
from diffusers import AutoencoderKL
from mgd3.core import load_tensors
from mgd3.data import dataset_spec, DatasetSpec, class_images
from mgd3.latents import encode_latents, decode_latents, vae_identity, cache_latents, encode_dataset, LatentCache

def tiny_vae(channels=3, seed=0, **kw):
    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=channels, out_channels=channels, down_block_types=('DownEncoderBlock2D',) * 2,
                         up_block_types=('UpDecoderBlock2D',) * 2, block_out_channels=(8, 16), latent_channels=4,
                         norm_num_groups=8, mid_block_add_attention=False, **kw).eval()

pytestmark = pytest.mark.filterwarnings("ignore:skipped unreadable image")
NETTE = dataset_spec('imagenette')
SUB = DatasetSpec('nette4', NETTE.wnids[:4], NETTE.class_ids[:4], NETTE.class_names[:4], 16)
COUNTS = [5, 3, 6, 4]

@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    for w, n in zip(SUB.wnids, COUNTS):
        d = tmp_path / 'imagenet' / 'train' / w; d.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(d / f'{w}_{i}.JPEG')
    (tmp_path / 'imagenet' / 'train' / SUB.wnids[2] / 'bad.JPEG').write_bytes(b'oops')
    return tmp_path / 'imagenet'

def test_mean_latents_are_scaled_posterior_means():
    vae = tiny_vae(); x = torch.rand(6, 3, 16, 16) * 2 - 1
    z = encode_latents(vae, x, batch_size=4)
    with torch.no_grad(): mean = vae.encode(x).latent_dist.mean
    assert z.shape == (6, 4, 8, 8) and z.dtype == torch.float32
    torch.testing.assert_close(z, mean * 0.18215, rtol=1e-4, atol=1e-5)

def test_shift_factor_and_decode_invert_each_other():
    vae = tiny_vae(shift_factor=0.3, scaling_factor=1.5); x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = encode_latents(vae, x)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        torch.testing.assert_close(z, (mean - 0.3) * 1.5, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(decode_latents(vae, z), vae.decode(mean).sample.clamp(-1, 1), rtol=1e-4, atol=1e-4)

def test_sampled_latents_follow_per_image_generators():
    vae = tiny_vae(); x = torch.rand(4, 3, 16, 16) * 2 - 1
    gens = lambda s: [torch.Generator().manual_seed(s + i) for i in range(4)]
    a = encode_latents(vae, x, 1, sample=True, generator=gens(0))
    b = encode_latents(vae, x, 4, sample=True, generator=gens(0))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, encode_latents(vae, x, 4, sample=True, generator=gens(10)))
    assert not torch.allclose(a, encode_latents(vae, x, 4))
    with pytest.raises(ValueError, match='3 generators for 4 images'):
        encode_latents(vae, x, sample=True, generator=gens(0)[:3])

def test_bad_image_range_is_refused():
    vae = tiny_vae()
    with pytest.raises(ValueError, match='uint8'): encode_latents(vae, torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r'expected \[-1, 1\]'): encode_latents(vae, torch.full((1, 3, 16, 16), 5.0))

def test_vae_identity_tracks_config_and_weights():
    a, b = tiny_vae(), tiny_vae()
    assert vae_identity(a) == vae_identity(b)
    assert vae_identity(a) != vae_identity(tiny_vae(seed=1))
    assert vae_identity(a) != vae_identity(tiny_vae(scaling_factor=0.13025))
    with torch.no_grad(): b.encoder.conv_in.bias[0] += 1e-3
    assert vae_identity(a) != vae_identity(b)

def test_cache_encodes_once_and_reuses(tree, tmp_path):
    vae = tiny_vae()
    with pytest.warns(UserWarning, match='bad.JPEG'):
        c = cache_latents(vae, SUB, tree, tmp_path / 'cache', progress=False)
    assert c.fresh == (0, 1, 2, 3) and c.counts() == COUNTS
    lat, lab = c.load()
    assert lat.shape == (sum(COUNTS), 4, 8, 8) and torch.bincount(lab).tolist() == COUNTS
    meta = c.class_meta(2)
    assert meta['wnid'] == SUB.wnids[2] and meta['skipped'] == ['bad.JPEG'] and len(meta['files']) == 7
    t, _ = load_tensors(c.shard_path(2)); assert t['file_index'].tolist() == [1, 2, 3, 4, 5, 6]
    # the cached latents are exactly what encode_latents gives for those images
    imgs = torch.cat([b.images for b in class_images(SUB, tree, 'train', 0)])
    torch.testing.assert_close(c.class_latents(0), encode_latents(vae, imgs), rtol=1e-4, atol=1e-5)
    again = cache_latents(tiny_vae(), SUB, tree, tmp_path / 'cache', progress=False)
    assert again.fresh == () and again.folder == c.folder
    assert torch.equal(encode_dataset(vae, SUB, tree, tmp_path / 'cache', progress=False).latents, lat)
    assert json.loads((c.folder / 'cache.json').read_text())['key']['vae'] == vae_identity(vae)

def test_interrupted_run_resumes_per_class(tree, tmp_path):
    vae = tiny_vae()
    first = cache_latents(vae, SUB, tree, tmp_path / 'cache', classes=[0, 1], progress=False)   # "interrupted" after 2
    assert first.fresh == (0, 1) and not first.shard_path(2).exists()
    with pytest.raises(FileNotFoundError, match='rerun cache_latents'): first.counts()
    rest = cache_latents(vae, SUB, tree, tmp_path / 'cache', progress=False)
    assert rest.fresh == (2, 3) and rest.counts() == COUNTS
    assert not list(rest.folder.glob('.*.tmp')) and not list(rest.folder.glob('.*safetensors'))

def test_changed_class_folder_is_reencoded(tree, tmp_path):
    vae = tiny_vae()
    cache_latents(vae, SUB, tree, tmp_path / 'cache', progress=False)
    extra = tree / 'train' / SUB.wnids[1] / 'zzz.JPEG'
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(extra)
    again = cache_latents(vae, SUB, tree, tmp_path / 'cache', progress=False)
    assert again.fresh == (1,) and again.counts()[1] == COUNTS[1] + 1

@pytest.mark.parametrize('change', [dict(image_size=32), dict(sample=True), dict(flips='seeded'), dict(split=None)])
def test_options_change_the_cache_key(tree, tmp_path, change):
    vae = tiny_vae(); base = cache_latents(vae, SUB, tree, tmp_path / 'c', classes=[0], progress=False)
    root = tree / 'train' if change.get('split', 'x') is None else tree
    other = cache_latents(vae, SUB, root, tmp_path / 'c', classes=[0], progress=False, **change)
    assert other.folder != base.folder and other.fresh == (0,)

def test_other_vae_gets_its_own_cache(tree, tmp_path):
    a = cache_latents(tiny_vae(), SUB, tree, tmp_path / 'c', classes=[0], progress=False)
    b = cache_latents(tiny_vae(seed=1), SUB, tree, tmp_path / 'c', classes=[0], progress=False)
    assert a.folder != b.folder and b.fresh == (0,)

def test_sampled_and_flipped_cache_is_reproducible(tree, tmp_path):
    vae = tiny_vae()
    a = cache_latents(vae, SUB, tree, tmp_path / 'a', sample=True, flips='seeded', seed=3, batch_size=2, progress=False)
    b = cache_latents(vae, SUB, tree, tmp_path / 'b', sample=True, flips='seeded', seed=3, batch_size=5, progress=False)
    torch.testing.assert_close(a.load().latents, b.load().latents, rtol=1e-4, atol=1e-5)
    m = cache_latents(vae, SUB, tree, tmp_path / 'a', progress=False)
    assert not torch.allclose(a.load().latents, m.load().latents)

def test_reopen_cache_without_vae(tree, tmp_path):
    c = cache_latents(tiny_vae(), SUB, tree, tmp_path / 'c', progress=False)
    r = LatentCache.open(c.folder)
    assert r.spec == SUB and r.key == c.key and torch.equal(r.load().latents, c.load().latents)

def test_mnist5k_encodes_through_the_same_api(tmp_path):
    vae = tiny_vae(channels=1)
    lat, lab = encode_dataset(vae, 'mnist5k', None, tmp_path, classes=[4, 7], batch_size=200, progress=False)
    assert lat.shape == (800, 4, 16, 16) and lab.tolist() == [4] * 400 + [7] * 400

@pytest.mark.gpu
def test_encoding_on_cuda_matches_cpu(tree, tmp_path):
    vae = tiny_vae(); x = torch.rand(3, 3, 16, 16) * 2 - 1
    cpu = encode_latents(vae, x)
    gpu = encode_latents(tiny_vae().cuda(), x)                     # images are moved to the VAE's device
    assert gpu.device.type == 'cpu'; torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]       # CPU generators drive CUDA sampling
    assert encode_latents(tiny_vae().cuda(), x, sample=True, generator=gens).shape == cpu.shape
    c = cache_latents(tiny_vae().cuda(), SUB, tree, tmp_path / 'c', progress=False)
    assert c.counts() == COUNTS

def test_fastai_folder_is_recorded_and_warned(tree, tmp_path):
    import shutil
    fa = tmp_path / 'imagenette2-160'; shutil.copytree(tree, fa)
    with pytest.warns(UserWarning, match="fastai's imagenette2 release"):
        c = cache_latents(tiny_vae(), SUB, fa, tmp_path / 'c', classes=[0], progress=False)
    assert c.key['source'] == 'fastai-imagenette2'
    assert c.folder != cache_latents(tiny_vae(), SUB, tree, tmp_path / 'c', classes=[0], progress=False).folder

def test_load_vae_from_a_folder(tmp_path):
    from mgd3.latents import load_vae
    vae = tiny_vae(); vae.save_pretrained(tmp_path / 'vae')
    back = load_vae(tmp_path / 'vae')
    assert not back.training and vae_identity(back) == vae_identity(vae)
    with pytest.raises(FileNotFoundError, match='cannot load an AutoencoderKL'): load_vae(tmp_path / 'missing')


@pytest.mark.parametrize('dtype,rel', [('float16', 2 ** -10), ('bfloat16', 2 ** -7)])
def test_half_precision_shards_are_another_key_and_read_back_as_float32(tree, tmp_path, dtype, rel):
    vae = tiny_vae()
    full = cache_latents(vae, SUB, tree, tmp_path / 'cache', progress=False)
    half = cache_latents(vae, SUB, tree, tmp_path / 'cache', progress=False, dtype=dtype)
    assert half.folder != full.folder and half.key['dtype'] == dtype and full.key['dtype'] == 'float32'
    assert half.fresh == (0, 1, 2, 3)   # a new key: encoded afresh, the float32 shards untouched
    for c in range(4):
        z, ref = half.class_latents(c), full.class_latents(c)
        assert z.dtype == torch.float32 and z.shape == ref.shape
        assert ((z - ref).abs() <= rel * ref.abs() + 1e-6).all()   # rounding of the stored values only
        assert half.shard_path(c).stat().st_size < 0.75 * full.shard_path(c).stat().st_size
    assert LatentCache.open(half.folder).dtype == getattr(torch, dtype)
    with pytest.raises(ValueError, match="unknown latent dtype 'float64'"):
        cache_latents(vae, SUB, tree, tmp_path / 'cache', dtype='float64')

def test_class_images_are_the_files_behind_the_rows(tree, tmp_path):
    from mgd3.images import load_image
    c = cache_latents(tiny_vae(), SUB, tree, tmp_path / 'cache', progress=False)
    files = sorted((tree / 'train' / SUB.wnids[2]).iterdir())
    t, _ = load_tensors(c.shard_path(2))
    imgs = c.class_images(2, tree)
    assert imgs.shape == (6, 3, 16, 16) and imgs.dtype == torch.uint8
    for img, i in zip(imgs, t['file_index'].tolist()): assert torch.equal(img, load_image(files[i], 16))
    starts = [0, 5, 8, 14]
    assert torch.equal(c.real_images(torch.tensor([starts[2] + 1, 0]), tree), torch.stack([imgs[1], c.class_images(0, tree)[0]]))

def test_a_run_stores_its_latent_cache_in_latent_dtype(tmp_path):
    "The run parameter `latent_dtype` reaches the cache: half-precision shards, read back as float32 for the modes."
    from mgd3.config import DistillConfig
    from mgd3.run import Run
    from mgd3.distill import prepare
    run = Run.open(DistillConfig.from_params(latent_dtype='float16', quick=True, out_dir=str(tmp_path / 'run')))
    ctx = prepare(run, torch.device('cpu'))
    assert ctx.cache.key['dtype'] == 'float16' and ctx.cache.dtype == torch.float16
    assert run.latent_cache().folder == ctx.cache.folder and ctx.modes.meta['cache_key']['dtype'] == 'float16'
    assert ctx.cache.class_latents(0).dtype == torch.float32 and ctx.modes.centroids.dtype == torch.float32

def _coin(seed, c, i):
    "The seeded flip coin, from its definition: bit 0 of the first 8 bytes (little-endian) of sha256('mgd3:...:flip')."
    import hashlib
    return int.from_bytes(hashlib.sha256(f"mgd3:{seed}:{c}:{i}:flip".encode()).digest()[:8], 'little') & 1 == 1

def test_mirrored_cache_sees_each_seeds_flips(tree, tmp_path):
    vae = tiny_vae()
    m = cache_latents(vae, SUB, tree, tmp_path / 'c', flips='both', batch_size=4, progress=False)
    assert m.mirrored and set(load_tensors(m.shard_path(0))[0]) == {'latents', 'latents_mirrored', 'file_index'}
    plain = cache_latents(vae, SUB, tree, tmp_path / 'c', progress=False)
    assert plain.folder != m.folder and not plain.mirrored
    for seed in (0, 1, 7):
        view = m.with_flips(seed)
        for c in range(len(SUB.wnids)):
            idx = load_tensors(m.shard_path(c))[0]['file_index']
            imgs = torch.cat([b.images for b in class_images(SUB, tree, 'train', c, batch_size=100)])
            coins = torch.tensor([_coin(seed, c, int(i)) for i in idx])
            want = torch.where(coins[:, None, None, None], imgs.flip(-1), imgs)
            with torch.no_grad(): ref = vae.encode(want).latent_dist.mean * vae.config.scaling_factor
            torch.testing.assert_close(view.class_latents(c), ref, atol=1e-5, rtol=1e-5)
            assert torch.equal(view.flipped_rows(c), coins)
        rows = torch.arange(sum(COUNTS))
        real = view.real_images(rows, tree)
        flips = torch.cat([view.flipped_rows(c) for c in range(len(SUB.wnids))])
        assert torch.equal(real[flips], plain.real_images(rows, tree)[flips].flip(-1))
        assert torch.equal(real[~flips], plain.real_images(rows, tree)[~flips])
    assert torch.equal(m.class_latents(2), plain.class_latents(2))   # no seed: the plain orientation
    with pytest.raises(ValueError, match="flips='both'"): plain.with_flips(0)
    with pytest.raises(ValueError, match="unknown flips True"): cache_latents(vae, SUB, tree, tmp_path, flips=True,
                                                                            progress=False)

def test_a_half_precision_mirrored_cache_flips_and_reads_back_float32(tree, tmp_path):
    "dtype= and flips='both' together: both orientations stored in float16, each seed's view float32 and flipped."
    vae = tiny_vae()
    m32 = cache_latents(vae, SUB, tree, tmp_path / 'c', flips='both', progress=False)
    m16 = cache_latents(vae, SUB, tree, tmp_path / 'c', flips='both', dtype='float16', progress=False)
    assert m16.folder != m32.folder and m16.mirrored and m16.key['dtype'] == 'float16'
    t, _ = load_tensors(m16.shard_path(1))
    assert t['latents'].dtype == t['latents_mirrored'].dtype == torch.float16
    v16, v32 = m16.with_flips(5), m32.with_flips(5)
    for c in range(len(SUB.wnids)):
        z, ref = v16.class_latents(c), v32.class_latents(c)
        assert z.dtype == torch.float32 and torch.equal(v16.flipped_rows(c), v32.flipped_rows(c))
        assert ((z - ref).abs() <= 2 ** -10 * ref.abs() + 1e-6).all()
        flips = v16.flipped_rows(c)
        imgs, plain = v16.class_images(c, tree), m16.class_images(c, tree)
        assert torch.equal(imgs[flips], plain[flips].flip(-1)) and torch.equal(imgs[~flips], plain[~flips])
    with pytest.raises(ValueError, match='needs latents_mirrored'):
        m16.write_class(0, t['latents'], t['file_index'], None)
