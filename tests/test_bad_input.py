"""Issue 8's bad-input table (docs/bad_input.md, one row per case): each bad input to the public API raises an error
of the expected type, raised by mgd3's own validation (not deep inside torch), whose message names the problem and a
fix, and overwrites no existing file."""
import hashlib, re, shutil, traceback
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
import mgd3
from mgd3.testing import tiny_mnist_pipeline, TINY_RUN

FIX = re.compile(r"\b(pass|use|rename|delete|choose|run|add|lower|remove|re-save|reinstall|free|index|build)\b|valid (names|ones)")

class W:
    "The shared workspace: a tiny mnist-shaped pipeline, a tiny 2-class ImageFolder and a per-row folder."
    def __init__(self, base):
        self.pipe = tiny_mnist_pipeline(base / 'pipe')
        self.root = base / 'tinyset'
        for split, n in (('train', 4), ('val', 2)):
            for c, name in enumerate(('a', 'b')):
                for i in range(n):
                    arr = np.random.default_rng(10 * c + i).integers(0, 256, (32, 32), dtype=np.uint8)
                    p = self.root / split / name / f'{i}.png'; p.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(p)
        self.spec = mgd3.folder_spec(self.root, name='rel-tiny', image_size=32, channels=1)
        self._bb = None
        self.tmp = None   # set per row
    @property
    def bb(self):
        if self._bb is None: self._bb = mgd3.load_backbone(self.pipe, device='cpu')
        return self._bb
    def copy_root(self):
        dst = self.tmp / 'root'; shutil.copytree(self.root, dst); return dst

@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    w = W(tmp_path_factory.mktemp('badinput'))
    mgd3.register_dataset('rel-tiny')(lambda: w.spec)
    yield w
    mgd3.DATASETS.pop('rel-tiny', None)

def _run_cfg(w, **kw): return dict(TINY_RUN, backbone=str(w.pipe), out_dir=str(w.tmp / 'run'), **kw)

# ---- setups: each makes the bad input under w.tmp and returns the call that must fail ----
def _root_without_train(w):
    r = w.tmp / 'flat'; (r / 'images').mkdir(parents=True)
    return lambda: mgd3.validate_dataset(w.spec, r).raise_if_invalid()

def _loose_images(w):
    r = w.copy_root(); shutil.copy(r / 'train' / 'a' / '0.png', r / 'train' / 'stray.png')
    return lambda: mgd3.validate_dataset(w.spec, r).raise_if_invalid()

def _missing_class(w):
    r = w.copy_root(); shutil.rmtree(r / 'val' / 'b')
    return lambda: mgd3.validate_dataset(w.spec, r).raise_if_invalid()

def _few_images_validate(w):
    r = w.copy_root()
    return lambda: mgd3.validate_dataset(w.spec, r, min_per_class=5).raise_if_invalid()

def _few_images_modes(w):
    z = torch.randn(7, 4, 8, 8); y = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    return lambda: mgd3.discover_modes(z, y, ipc=4, class_names=['a', 'b'])

def _corrupt_image(w):
    p = w.tmp / 'bad.png'; p.write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 20)   # a truncated PNG
    return lambda: mgd3.load_image(p, 32, 1)

def _class_of_non_images(w):
    r = w.copy_root()
    for f in (r / 'train' / 'b').iterdir(): f.unlink()
    (r / 'train' / 'b' / 'notes.txt').write_text('not an image')           # ignored (no image extension)
    (r / 'train' / 'b' / 'photo.jpg').write_text('a text file named .jpg')   # unreadable: skipped with a warning
    (r / 'train' / 'b' / 'cut.png').write_bytes((w.root / 'train' / 'b' / '0.png').read_bytes()[:60])  # truncated
    return lambda: mgd3.cache_latents(w.bb.vae, w.spec, r, w.tmp / 'cache', progress=False)

def _modes_from_another_vae(w):
    from diffusers import AutoencoderKL
    pipe_b = w.tmp / 'pipe_b'; shutil.copytree(w.pipe, pipe_b)
    torch.manual_seed(1)   # same architecture, other weights: another VAE under the same backbone path
    AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), down_block_types=('DownEncoderBlock2D',) * 3,
                  up_block_types=('UpDecoderBlock2D',) * 3, latent_channels=4, norm_num_groups=4,
                  layers_per_block=1).save_pretrained(pipe_b / 'vae')
    params = dict(_run_cfg(w, dataset='rel-tiny', data_root=str(w.root), methods=('mgd3',), mode_flips='none'),
                  backbone=str(pipe_b))   # one unflipped mode set: out_dir/modes.safetensors
    out = Path(params['out_dir'])
    mgd3.Run.open(mgd3.DistillConfig(**params).resolved())
    cache = mgd3.cache_latents(w.bb.vae, w.spec, w.root, out / 'latents', progress=False)   # made with VAE A
    mgd3.discover_modes_cached(cache, 2).save(out / 'modes.safetensors')
    return lambda: mgd3.distill(**params)

def _other_config(w):
    mgd3.Run.open(mgd3.DistillConfig(**_run_cfg(w)).resolved())
    return lambda: mgd3.distill(**_run_cfg(w, ipc=3) | {'ipc': 3})

def _corrupt_manifest(w):
    (w.tmp / 'run').mkdir(); (w.tmp / 'run' / 'manifest.json').write_text('{"config": {"ipc": 2')
    return lambda: mgd3.distill(**_run_cfg(w))

def _unwritable_out_dir(w):
    (w.tmp / 'a_file').write_text('I am a file, not a folder')   # as root, chmod cannot make a folder unwritable
    return lambda: mgd3.distill(**_run_cfg(w) | {'out_dir': str(w.tmp / 'a_file' / 'run')})

def _backbone_without(part):
    def setup(w):
        b = w.tmp / 'bb'; shutil.copytree(w.pipe, b); shutil.rmtree(b / part)
        return lambda: mgd3.load_backbone(b, device='cpu')
    return setup

def _backbone_pickle_weights(w):
    b = w.tmp / 'bb'; shutil.copytree(w.pipe, b)
    for f in (b / 'transformer').glob('*.safetensors'): f.rename(f.with_suffix('.bin'))
    return lambda: mgd3.load_backbone(b, device='cpu')

def _generate_bad_modes(w):
    return lambda: mgd3.generate(w.bb, [1, 2], seeds=[0, 1], modes=torch.zeros(2, 4, 16, 16), stop_t=2,
                                 num_inference_steps=4, progress=False)

def _check(**kw): return lambda w: (lambda: mgd3.DistillConfig(**_run_cfg(w, **kw) | kw).resolved().check())

# ---- issue 14: numbers checked where they are born, one writer per run, disk space ----
def _generate(**kw):
    def setup(w):
        args = dict(seeds=[0], num_inference_steps=4, stop_t=2, progress=False) | kw
        labels = args.pop('labels', [1])
        return lambda: mgd3.generate(w.bb, labels, **args)
    return setup

def _diverging(w):   # finite inputs that overflow: a λ and modes far too large
    modes = torch.full((1, 4, 8, 8), 1e30)
    return lambda: mgd3.generate(w.bb, [1], seeds=[0], modes=modes, mode_guidance_scale=1e30, num_inference_steps=4,
                                 stop_t=0, progress=False)

def _modes_call(**kw):
    def setup(w):
        z, y = torch.randn(6, 4, 2, 2), [0, 0, 0, 1, 1, 1]
        args = dict(ipc=2) | kw
        z = args.pop('latents', z)
        return lambda: mgd3.discover_modes(z, args.pop('labels', y), **args)
    return setup

def _nan_latents():
    z = torch.randn(6, 4, 2, 2)
    z[4, 1, 0, 0] = float('nan')
    return z

def _evaluate(**kw):
    def setup(w):
        train = (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
        test = (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]))
        return lambda: mgd3.evaluate(train, test, preset='quick', epochs=1, device='cpu', **kw)
    return setup

def _nan_images(w):
    imgs = torch.rand(2, 1, 8, 8)
    imgs[1, 0, 3, 3] = float('nan')
    return lambda: mgd3.write_images(imgs, [w.tmp / 'set' / 'a' / '0.png', w.tmp / 'set' / 'a' / '1.png'])

def _nan_vae_shard(w):
    import copy
    vae = copy.deepcopy(w.bb.vae)
    with torch.no_grad(): vae.quant_conv.bias.fill_(float('nan'))   # an encoder that overflows
    return lambda: mgd3.cache_latents(vae, w.spec, w.root, w.tmp / 'cache', progress=False)

def _locked(w):
    from mgd3.run import RunLock
    out = w.tmp / 'run'; out.mkdir()
    lock = RunLock(out).__enter__()   # held by this process (another open file: flock refuses a second one)
    w.held = lock
    return lambda: mgd3.distill(**_run_cfg(w) | {'lock': 'fail'})

def _full_disk(w):
    import shutil as sh
    real = sh.disk_usage
    def call():
        sh.disk_usage = lambda p: real(p)._replace(free=5 * 2**20)   # 5 MiB free
        try: mgd3.distill(**_run_cfg(w))
        finally: sh.disk_usage = real
    return call

# ---- issue 27: one preflight before any work (mgd3.preflight): every problem at once, nothing created ----
def _pre(**kw):
    def setup(w): return lambda: mgd3.distill(**_run_cfg(w) | kw)
    return setup

def _pre_data(**kw):
    def setup(w): return lambda: mgd3.distill(**_run_cfg(w) | {'dataset': 'rel-tiny', 'data_root': str(w.root),
                                                               'mode_flips': 'none'} | kw)
    return setup

def _pre_component(w):
    b = w.tmp / 'bb'; shutil.copytree(w.pipe, b); shutil.rmtree(b / 'scheduler')
    return lambda: mgd3.distill(**_run_cfg(w) | {'backbone': str(b)})

def _pre_teacher_folder(w):
    t = w.tmp / 'teacher'; t.mkdir(); (t / 'config.json').write_text('{}')
    return lambda: mgd3.distill(**_run_cfg(w) | {'teacher': str(t)})


ROWS = [  # (id, what is wrong, setup(w) -> call, exception, regex naming the problem)
    ('unknown-dataset', 'unknown dataset name', lambda w: (lambda: mgd3.dataset_spec('mnist6k')),
     ValueError, r"unknown dataset 'mnist6k'.*folder_spec"),
    ('unknown-dataset-distill', 'unknown dataset given to distill', lambda w: (lambda: mgd3.distill(**_run_cfg(w) | {'dataset': 'cifar11'})),
     ValueError, r"unknown dataset 'cifar11'"),
    ('no-data-root', 'an ImageNet subset without data_root', _check(dataset='imagenette'),
     ValueError, r"needs data_root"),
    ('missing-data-root', 'data_root that does not exist',
     lambda w: (lambda: mgd3.cache_latents(w.bb.vae, w.spec, w.tmp / 'nope', w.tmp / 'cache', progress=False)),
     FileNotFoundError, r"dataset root .*nope does not exist"),
    ('no-train-folder', 'data_root without train/', _root_without_train, ValueError, r"has no train/ folder"),
    ('loose-images', 'images directly in train/, not in class folders', _loose_images, ValueError, r"holds 1 images directly"),
    ('missing-class', 'a class folder missing', _missing_class, ValueError, r"val: 1 of 2 class folders missing"),
    ('few-images-validate', 'a class with fewer images than IPC (validate_dataset)', _few_images_validate,
     ValueError, r"2 classes have fewer than 5 images"),
    ('few-images-modes', 'a class with fewer images than IPC (mode discovery)', _few_images_modes,
     ValueError, r"class 1 \(b\) has 3 images but ipc=4"),
    ('corrupt-image', 'a corrupt (truncated) PNG', _corrupt_image, mgd3.UnreadableImageError, r"cannot read image .*bad\.png"),
    ('non-image-class', 'a class of only non-image / corrupt files', _class_of_non_images,
     ValueError, r"class 1 \(b\) .* has no readable images"),
    ('ipc-zero', 'ipc = 0', _check(ipc=0), ValueError, r"ipc must be a positive int, got 0"),
    ('ipc-negative-modes', 'ipc < 0 for mode discovery',
     lambda w: (lambda: mgd3.discover_modes(torch.randn(6, 4, 8, 8), torch.tensor([0, 0, 0, 1, 1, 1]), ipc=-1)),
     ValueError, r"ipc must be at least 1, got -1"),
    ('no-seeds', 'empty seed list', _check(seeds=[]), ValueError, r"seeds is empty"),
    ('lambda-negative', 'λ < 0', _check(mode_guidance_scale=-0.1), ValueError, r"mode_guidance_scale \(λ\) must be >= 0, got -0.1"),
    ('stop-t-high', 't_stop > num_inference_steps', _check(stop_t=60), ValueError, r"stop_t=60 is outside \[0, num_inference_steps=4\]"),
    ('stop-t-negative', 't_stop < 0', _check(stop_t=-1), ValueError, r"stop_t=-1 is outside"),
    ('modeset-flat', 'ModeSet centroids without a latent shape',
     lambda w: (lambda: mgd3.ModeSet(torch.zeros(10, 2), torch.zeros(10, 2), torch.zeros(10, 2), 'kmeans', 0)),
     ValueError, r"centroids must be a tensor \[C, ipc, \*latent_shape\], got shape \(10, 2\)"),
    ('modeset-sizes', 'ModeSet sizes not [C, ipc]',
     lambda w: (lambda: mgd3.ModeSet(torch.zeros(10, 2, 4, 8, 8), torch.zeros(10, 3), torch.zeros(10, 2), 'kmeans', 0)),
     ValueError, r"sizes \(10, 3\) must have shape \[C, ipc\] = \(10, 2\)"),
    ('generate-modes-shape', 'modes of the wrong latent shape passed to generate', _generate_bad_modes,
     ValueError, r"modes has shape \(2, 4, 16, 16\); expected one latent per image, \(2, 4, 8, 8\)"),
    ('modes-other-vae', 'modes made from another VAE in the run folder', _modes_from_another_vae,
     ValueError, r"modes\.safetensors was made from another latent cache"),
    ('out-dir-other-config', 'out_dir holding a run with another config', _other_config,
     ValueError, r"holds a run with another config \(differs in \['ipc'\]\)"),
    ('out-dir-corrupt-manifest', 'out_dir with a corrupt manifest.json', _corrupt_manifest,
     ValueError, r"manifest\.json is not valid JSON"),
    ('out-dir-unwritable', 'unwritable out_dir (its parent is a file)', _unwritable_out_dir,
     OSError, r"cannot create out_dir .*a_file/run: Not a directory"),
    ('unknown-evalnet', 'unknown evaluation network', lambda w: (lambda: mgd3.create_evalnet('vit_huge', 10, 32)),
     ValueError, r"unknown evaluation network 'vit_huge'"),
    ('unknown-evalnet-evaluate', 'unknown net given to evaluate',
     lambda w: (lambda: mgd3.evaluate((torch.zeros(4, 1, 32, 32, dtype=torch.uint8), torch.tensor([0, 0, 1, 1])),
                                      (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), torch.tensor([0, 1])),
                                      net='vit_huge', preset='quick', epochs=1, device='cpu')),
     ValueError, r"unknown evaluation network 'vit_huge'"),
    ('unknown-evalnet-config', 'unknown net in the run config', _check(nets=['convnet3', 'vgg99']),
     ValueError, r"unknown evaluation nets \['vgg99'\]"),
    ('backbone-no-scheduler', 'backbone folder without scheduler/', _backbone_without('scheduler'),
     FileNotFoundError, r"has no scheduler/ folder"),
    ('backbone-no-vae', 'backbone folder without vae/', _backbone_without('vae'), FileNotFoundError, r"has no vae/ folder"),
    ('backbone-pickle-weights', 'backbone weights only as a pickled .bin', _backbone_pickle_weights,
     FileNotFoundError, r"transformer lacks its \*\.safetensors weights"),
    ('backbone-missing', 'backbone path that does not exist', lambda w: (lambda: mgd3.load_backbone(w.tmp / 'nothing')),
     FileNotFoundError, r"no backbone folder"),
    # ---- issue 14 ----
    ('lambda-nan', 'λ = NaN', _check(mode_guidance_scale=float('nan')),
     ValueError, r"mode_guidance_scale must be finite, got nan; pass a finite λ"),
    ('lambda-inf-generate', 'λ = inf given to generate', _generate(mode_guidance_scale=float('inf')),
     ValueError, r"mode_guidance_scale must be finite, got inf"),
    ('cfg-nan', 'classifier-free guidance scale NaN', _check(guidance_scale=float('nan')),
     ValueError, r"guidance_scale must be finite, got nan"),
    ('x0-clip-inf', 'x0_clip = inf', _generate(x0_clip=float('inf')), ValueError, r"x0_clip must be finite, got inf"),
    ('modes-nan-generate', 'modes holding NaN passed to generate',
     _generate(modes=torch.full((1, 4, 8, 8), float('nan'))), mgd3.NonFiniteError,
     r"modes holds 256 NaN or infinite values; pass finite modes"),
    ('sampling-diverges', 'finite inputs that make the sampler overflow (λ and modes ~1e30)', _diverging,
     mgd3.SamplingDivergedError, r"NaN or infinite latents at step 1 of 4 \(timestep \d+, mode guidance on\).*"
     r"mode_guidance_scale \(λ\) = 1e\+30 and x0_clip = None; lower mode_guidance_scale"),
    ('nonfinite-image', 'an image holding NaN handed to write_images', _nan_images,
     ValueError, r"images \[1\] contain NaN or infinite values and were not written"),
    ('nonfinite-shard', 'a VAE that encodes a class to NaN', _nan_vae_shard,
     mgd3.NonFiniteError, r"the latents of class 0 \(a\) holds \d+ NaN or infinite values; the VAE overflowed"),
    ('stop-t-float', 't_stop = 2.5', _check(stop_t=2.5), TypeError, r"stop_t must be an int, got 2\.5 \(float\)"),
    ('steps-float', 'num_inference_steps = 4.0', _check(num_inference_steps=4.0), TypeError,
     r"num_inference_steps must be an int, got 4\.0"),
    ('ipc-bool', 'ipc = True', _check(ipc=True), ValueError, r"ipc must be a positive int, got True"),
    ('seeds-repeated', 'the same seed twice', _check(seeds=[0, 0]), ValueError, r"seeds lists \[0\] more than once"),
    ('seeds-string', "seeds = '0' (a string)", _check(seeds='0'), TypeError, r"seeds\[0\] must be an int, got '0'"),
    ('seeds-not-ints', "seeds = ['a']", _check(seeds=['a']), TypeError, r"seeds\[0\] must be an int, got 'a'"),
    ('seeds-negative', 'a negative seed', _check(seeds=[-1]), ValueError, r"seeds\[0\]=-1 is outside \[0, 4294967295\]"),
    ('epochs-negative', 'epochs = -1', _check(epochs=-1), ValueError, r"epochs=-1 is outside \[1, inf\]"),
    ('nets-empty', 'no evaluation networks', _check(nets=[]), ValueError, r"nets is empty"),
    ('methods-empty', 'no methods', _check(methods=[]), ValueError, r"methods is empty"),
    ('quick-not-bool', "quick = 'yes'", _check(quick='yes'), TypeError, r"quick must be True or False, got 'yes'"),
    ('out-dir-not-path', 'out_dir = 3',
     lambda w: (lambda: mgd3.DistillConfig(**_run_cfg(w) | {'out_dir': 3}).resolved().check()),
     TypeError, r"out_dir must be a path \(str or pathlib\.Path\), got 3"),
    ('device-unknown', "device = 'gpu'", _check(device='gpu'), ValueError, r"device 'gpu' is not a device name"),
    ('lock-unknown', "lock = 'never'", _check(lock='never'), ValueError, r"unknown lock 'never'; use one of \['wait', 'fail'\]"),
    ('unknown-run-parameter', 'a misspelt run parameter', lambda w: (lambda: mgd3.distill(**_run_cfg(w), lam=0.1)),
     TypeError, r"unknown run parameters \['lam'\]; valid ones"),
    ('generate-labels-float', 'class ids as floats', _generate(labels=[1.5]), TypeError,
     r"labels\[0\] must be an int, got 1\.5"),
    ('generate-seed-huge', 'a seed beyond 64 bits', _generate(seeds=[2**64]), ValueError,
     r"seeds\[0\]=18446744073709551616 is outside"),
    ('generate-unknown-setting', 'a keyword that is no sampler setting', _generate(lam=0.1), TypeError,
     r"unknown sampler settings \['lam'\]; valid ones"),
    ('modes-latents-nan', 'latents holding NaN given to discover_modes', _modes_call(latents=_nan_latents()),
     mgd3.NonFiniteError, r"latents holds 1 NaN or infinite values"),
    ('modes-labels-float', 'float labels given to discover_modes', _modes_call(labels=[0, 0, 0, 1.0, 1, 1]),
     TypeError, r"labels\[3\] must be an int, got 1\.0"),
    ('modes-seed-negative', 'a negative clustering seed', _modes_call(seed=-1), ValueError, r"seed=-1 is outside"),
    ('modes-ipc-float', 'ipc = 2.0 for mode discovery', _modes_call(ipc=2.0), TypeError, r"ipc must be an int, got 2\.0"),
    ('eval-lr-nan', 'a NaN learning rate override', _evaluate(lr=float('nan')), ValueError, r"lr must be finite, got nan"),
    ('eval-momentum-negative', 'momentum < 0', _evaluate(momentum=-0.9), ValueError, r"momentum=-0\.9 is outside \[0, 1\]"),
    ('eval-int-float', 'an int setting given as a float (evals=1.5)', _evaluate(evals=1.5), TypeError,
     r"evals must be an int, got 1\.5"),
    ('eval-seed-huge', 'a training seed beyond 2**32', _evaluate(seed=2**40), ValueError, r"seed=1099511627776 is outside"),
    ('eval-teacher-hard', 'a teacher given to the hard-label protocol', _evaluate(teacher='mnist5k'), ValueError,
     r"teacher= is used only by the soft-label protocol"),
    ('eval-unknown-setting', 'an override that is no EvalConfig field', _evaluate(learning_rate=0.1), ValueError,
     r"unknown evaluation settings \['learning_rate'\]"),
    ('cache-image-size-float', 'image_size = 32.0 for cache_latents',
     lambda w: (lambda: mgd3.cache_latents(w.bb.vae, w.spec, w.root, w.tmp / 'cache', image_size=32.0, progress=False)),
     TypeError, r"image_size must be an int, got 32\.0"),
    ('backbone-device-unknown', "load_backbone(device='gpu')", lambda w: (lambda: mgd3.load_backbone(w.pipe, device='gpu')),
     ValueError, r"device 'gpu' is not a device name"),
    ('backbone-dtype', "load_backbone(dtype='fp16') (a string, not a torch dtype)",
     lambda w: (lambda: mgd3.load_backbone(w.pipe, device='cpu', dtype='fp16')), TypeError, r"dtype must be one of"),
    ('run-locked', 'a second distill on an out_dir another process is writing (lock=\'fail\')', _locked,
     mgd3.RunLockedError, r"run is being written by another mgd3 run \(pid \d+ on .*, since .*\); wait for it to finish"),
    ('disk-full-preflight', 'a disk with less free space than the run needs', _full_disk,
     OSError, r"not enough disk space for this run in .*run: it needs about [\d.]+ [MG]iB \(\d+ bytes\) more "
     r"\(latents [\d.]+ [MG]iB, images [\d.]+ [MG]iB, other [\d.]+ [MG]iB\) but 5\.0 MiB \(5242880 bytes\) is free"),
    # ---- issue 27: the preflight ----
    ('preflight-several', 'a missing data root and, offline, an uncached backbone and VAE (all reported at once)',
     _pre(dataset='imagenette', data_root='/no/such/dir', backbone=None), mgd3.PreflightError,
     r"3 problems found before anything was written.*\[data\].*/no/such/dir does not exist.*\[backbone\].*"
     r"facebook/DiT-XL-2-256.*hub is offline.*\[vae\].*sd-vae-ft-mse"),
    ('preflight-config-and-data', 'a bad parameter and a missing data root', _pre(ipc=0, dataset='imagenette',
     data_root='/no/such/dir'), mgd3.PreflightError, r"2 problems.*\[config\].*ipc must be a positive int.*\[data\]"),
    ('preflight-data-root-missing', 'data_root that does not exist (distill)', _pre_data(data_root='/no/such/dir'),
     ValueError, r"data_root /no/such/dir cannot serve rel-tiny: root /no/such/dir does not exist"),
    ('preflight-few-train-images', 'fewer train images per class than ipc (distill)', _pre_data(ipc=5),
     ValueError, r"train: 2 classes have fewer than 5 images"),
    ('preflight-backbone-offline', 'a hub id not in the cache, offline', _pre(backbone='nobody/no-such-dit'),
     FileNotFoundError, r"backbone 'nobody/no-such-dit' is not in the local Hugging Face cache and the hub is offline"),
    ('preflight-backbone-component', 'a backbone folder missing a component its model_index.json lists',
     _pre_component, FileNotFoundError, r"bb has no scheduler/ folder, which its model_index\.json lists"),
    ('preflight-vae-missing', 'vae= a path that does not exist', _pre(vae='/no/such/vae'), FileNotFoundError,
     r"vae '/no/such/vae' is not a folder and not a hub id"),
    ('preflight-teacher-weights', 'teacher_weights that do not exist',
     _pre(teacher='resnet18.tv_in1k', teacher_weights='/no/such.safetensors'), FileNotFoundError,
     r"teacher weights /no/such\.safetensors do not exist"),
    ('preflight-teacher-offline', 'a timm teacher without weights, offline', _pre(teacher='resnet18.tv_in1k'),
     FileNotFoundError, r"weights of teacher 'resnet18\.tv_in1k' are not in the local Hugging Face cache.*pass "
     r"teacher_weights="),
    ('preflight-teacher-folder', 'a teacher folder without model.safetensors', _pre_teacher_folder,
     FileNotFoundError, r"teacher folder .*teacher lacks \['model\.safetensors'\]"),
]

def _snapshot(*roots):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for r in roots for p in Path(r).rglob('*') if p.is_file()}

@pytest.mark.parametrize('row', ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(row, ws, tmp_path):
    _, what, setup, exc, pattern = row
    ws.tmp = tmp_path
    call = setup(ws)
    before = _snapshot(tmp_path, ws.pipe, ws.root)
    with pytest.warns() if row[0] == 'non-image-class' else _nothing():
        with pytest.raises(exc) as info:
            call()
    msg = str(info.value)
    assert re.search(pattern, msg, re.S), f"{what}: message does not name the problem: {msg}"
    assert FIX.search(msg), f"{what}: message names no fix: {msg}"
    inner = traceback.extract_tb(info.tb)[-1].filename
    assert '/mgd3/' in inner.replace('\\', '/'), f"{what}: raised deep inside {inner}, not by mgd3's validation"
    after = _snapshot(tmp_path, ws.pipe, ws.root)
    changed = [p for p, h in before.items() if after.get(p) != h]
    # distill records the seconds of the stages it ran in manifest.json (bookkeeping, not data)
    allowed = {Path(tmp_path / 'run' / 'manifest.json')} if row[0] == 'modes-other-vae' else set()
    assert not set(changed) - allowed, f"{what}: overwrote or removed {changed}"
    if getattr(ws, 'held', None) is not None: ws.held.__exit__(None, None, None); ws.held = None

@pytest.mark.parametrize('row', [r for r in ROWS if r[0].startswith('preflight-')], ids=lambda r: r[0])
def test_a_failed_preflight_creates_nothing(row, ws, tmp_path):
    "distill refused by the preflight leaves no run folder (before: one holding only manifest.json)."
    ws.tmp = tmp_path
    call = row[2](ws)
    before = sorted(p for p in tmp_path.rglob('*'))
    with pytest.raises(row[3]): call()
    assert sorted(p for p in tmp_path.rglob('*')) == before and not (tmp_path / 'run').exists()

class _nothing:
    def __enter__(self): return self
    def __exit__(self, *a): return False

def test_table_is_large_enough():
    assert len(ROWS) >= 15 and len({r[0] for r in ROWS}) == len(ROWS)

def test_table_matches_the_docs():
    "docs/bad_input.md has one row per test row, with the same ids in the same order."
    doc = (Path(__file__).parents[1] / 'docs' / 'bad_input.md').read_text()
    ids = re.findall(r"^\| ([a-z0-9-]+) \|", doc.split('## Write failures')[0], re.M)
    assert [i for i in ids if i != 'id'] == [r[0] for r in ROWS]

def test_cache_from_another_vae_is_not_reused(ws, tmp_path):
    "A latent cache made with VAE A is never read for VAE B: another key, another folder, all classes re-encoded."
    from diffusers import AutoencoderKL
    vae_a = ws.bb.vae
    torch.manual_seed(1)
    vae_b = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
                          down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                          latent_channels=4, norm_num_groups=4, layers_per_block=1).eval()
    a = mgd3.cache_latents(vae_a, ws.spec, ws.root, tmp_path, progress=False)
    shards_a = _snapshot(a.folder)
    b = mgd3.cache_latents(vae_b, ws.spec, ws.root, tmp_path, progress=False)
    assert a.key['vae'] != b.key['vae'] and a.folder != b.folder and b.fresh == (0, 1)
    assert not torch.equal(a.load().latents, b.load().latents)
    assert _snapshot(a.folder) == shards_a                     # A's shards untouched
    # a shard of A copied into B's folder is detected by its key and re-encoded, not read
    shutil.copy(a.shard_path(0), b.shard_path(0))
    b2 = mgd3.cache_latents(vae_b, ws.spec, ws.root, tmp_path, progress=False)
    assert b2.fresh == (0,) and torch.equal(b2.load().latents, b.load().latents)
    # and the same VAE again reuses its cache (nothing re-encoded)
    assert mgd3.cache_latents(vae_a, ws.spec, ws.root, tmp_path, progress=False).fresh == ()
