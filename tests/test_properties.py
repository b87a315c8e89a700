"""Issue 14, property-based: any value given to `DistillConfig`, `generate`, `discover_modes` or `evaluate` either runs
or raises mgd3's own ValueError/TypeError naming the parameter — never an exception from inside torch, NumPy,
scikit-learn or diffusers (the raising frame must be in mgd3, as in tests/test_bad_input.py).

Each example replaces one or two arguments of a small valid call by values drawn from a wide mix (None, bools, ints
from small to 2**64, floats with NaN/±inf/±1e30, strings, bytes, lists, tuples, dicts, arbitrary objects, tensors of
odd shapes and dtypes, with NaN or huge values, and valid values of the parameter). Where a valid value costs time in
proportion to itself (epochs, steps, jobs), its valid draws are kept small; its invalid draws are not.

Profiles: 'ci' (the default, a few examples per property) and 'slow' (many more), picked with MGD3_RUN_SLOW=1 or
MGD3_HYPOTHESIS_PROFILE=slow. The number of inputs tried is printed at the end (pytest -s)."""
import collections, json, os, traceback
from dataclasses import MISSING
from pathlib import Path
import pytest, torch
from hypothesis import HealthCheck, given, settings, strategies as st
import mgd3
from mgd3.testing import tiny_mnist_pipeline

settings.register_profile('ci', max_examples=30, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile('slow', max_examples=400, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
PROFILE = settings.get_profile('slow' if os.environ.get('MGD3_RUN_SLOW') == '1'
                               else os.environ.get('MGD3_HYPOTHESIS_PROFILE', 'ci'))
TRIED = collections.Counter()   # inputs tried per property (and how they ended)

# ---------------------------------------------------------------- values
SMALL_INTS = st.integers(-3, 12)
HUGE_INTS = st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64, -2**63, 10**30])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 0.5, 2.5, 1e-30, 1e30, -1e30])

def _tensor(shape, dtype, fill):
    t = torch.randn(shape) if dtype.is_floating_point else torch.randint(0, 3, shape)
    t = t.to(dtype)
    if fill is not None and t.is_floating_point() and t.numel(): t.view(-1)[0] = fill
    return t

TENSORS = st.builds(_tensor, st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple),
                    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]),
                    st.sampled_from([None, float('nan'), float('inf'), 1e30]))
JUNK = st.one_of(st.none(), st.booleans(), SMALL_INTS, HUGE_INTS, FLOATS, st.text(max_size=6), st.binary(max_size=3),
                 st.lists(SMALL_INTS | st.text(max_size=2) | FLOATS, max_size=3), st.tuples(SMALL_INTS, FLOATS),
                 st.dictionaries(st.text(max_size=2), SMALL_INTS, max_size=2), st.just(object()), TENSORS)

def values(*valid, cheap_ints=True):
    "Junk, plus the parameter's valid values; with cheap_ints=False, huge ints are left out (they would run long)."
    junk = JUNK if cheap_ints else st.one_of(st.none(), st.booleans(), SMALL_INTS, FLOATS, st.text(max_size=6),
                                             st.lists(SMALL_INTS, max_size=3), st.just(object()), TENSORS)
    return st.booleans().flatmap(lambda ok: st.sampled_from(valid) if ok else junk) if valid else junk

def outcome(prop:str, params:dict, call, also=()):
    "Run `call`: it returns, or raises mgd3's own ValueError/TypeError naming one of `params` (or `also`)."
    TRIED[prop] += 1
    try: call()
    except (ValueError, TypeError) as e:
        frame = traceback.extract_tb(e.__traceback__)[-1].filename.replace('\\', '/')
        assert '/mgd3/' in frame, f"{params}: raised inside {frame}, not by mgd3: {type(e).__name__}: {e}"
        names = list(params) + list(also)
        assert any(n in str(e) for n in names), f"{params}: the message names none of {names}: {e}"
        TRIED[prop + ' (refused)'] += 1
        return
    TRIED[prop + ' (ran)'] += 1

@pytest.fixture(scope='module', autouse=True)
def report():
    yield
    print('\nproperty inputs tried: ' + json.dumps(dict(sorted(TRIED.items()))))

# ---------------------------------------------------------------- DistillConfig
CONFIG_VALUES = {
    'dataset': values('mnist5k', 'imagenette'), 'data_root': values('/nowhere', Path('/tmp')),
    'ipc': values(1, 10), 'seeds': values([0, 1], (3,), [0, 0], 7), 'mode_guidance_scale': values(0.1, 0, 5),
    'stop_t': values(0, 25, 50), 'guidance_scale': values(1, 4.0), 'num_inference_steps': values(50, 1, 1000),
    'sampler': values('ddpm', 'ddim'), 'backbone': values('tiny-mnist', 'sd:/x'), 'vae': values('/v'),
    'out_dir': values('runs/x', Path('runs/y')), 'protocol': values('hard', 'soft'),
    'nets': values(['convnet3'], 'convnet6', ['convnet3', 'resnet18']), 'epochs': values(1, 300),
    'methods': values(['mgd3'], 'unguided', ['mgd3', 'herding']), 'quick': values(True, False),
    'teacher': values('mnist5k'), 'mode_method': values('kmeans', 'gmm'), 'chunk_size': values(64, 1),
    'batch_size': values(64, 1), 'device': values('cpu', 'cuda', 'cpu:0'), 'lock': values('wait', 'fail'),
}
for _n, _d, _ in mgd3.DistillConfig.parameters():   # a parameter added later: junk, or its default
    CONFIG_VALUES.setdefault(_n, values(_d) if _d is not None else values())
assert set(CONFIG_VALUES) == {n for n, _, _ in mgd3.DistillConfig.parameters()}   # every parameter is drawn

@PROFILE
@given(st.dictionaries(st.sampled_from(sorted(CONFIG_VALUES)), st.just(None), min_size=1, max_size=3)
       .flatmap(lambda d: st.fixed_dictionaries({k: CONFIG_VALUES[k] for k in d})))
def test_distill_config(params):
    def call():
        cfg = mgd3.DistillConfig.from_params(**params)
        json.dumps(cfg.result_config())
        cfg.sampler_settings()
    outcome('DistillConfig.from_params', params, call)

# ---------------------------------------------------------------- generate
@pytest.fixture(scope='module')
def bb(tmp_path_factory):
    return mgd3.load_backbone(tiny_mnist_pipeline(tmp_path_factory.mktemp('props') / 'pipe'), device='cpu')

GEN_BASE = dict(seeds=[0, 1], modes=None, num_inference_steps=3, stop_t=1, decode=True, progress=False)
GEN_VALUES = {
    'labels': values([1, 2], [0, 9], [10, 1], torch.tensor([3, 4])), 'seeds': values([0, 1], [5, 5], [2**63, 1]),
    'modes': values(None, torch.zeros(2, 4, 8, 8), torch.full((2, 4, 8, 8), 1e30)), 'settings': values(None),
    'batch_size': values(1, 64), 'decode': values(True, False), 'progress': values(False),
    'mode_guidance_scale': values(0.1, 0, 1e30), 'stop_t': values(0, 1, 3), 'guidance_scale': values(1, 4.0, 1e30),
    'num_inference_steps': values(1, 3, cheap_ints=False), 'sampler': values('ddpm', 'ddim'),
    'cfg_channels': values(None, 3, 4, 5), 'variance': values('learned', 'scheduler'), 'x0_clip': values(None, 1.0),
    'chunk_size': values(1, 2, 64, cheap_ints=False), 'precision': values('fp32', 'bf16', 'fp16'),
    'spacing': values(None, 'authors', 'scheduler'),
}
for _f in mgd3.SamplerSettings.__dataclass_fields__.values():   # a setting added later: junk, or its default
    GEN_VALUES.setdefault(_f.name, values(_f.default) if _f.default not in (None, MISSING) else values())
assert set(GEN_VALUES) - {'labels', 'seeds', 'modes', 'settings', 'batch_size', 'decode', 'progress'} \
    == set(mgd3.SamplerSettings.__dataclass_fields__)   # every sampler setting is drawn

@PROFILE
@given(st.dictionaries(st.sampled_from(sorted(GEN_VALUES)), st.just(None), min_size=1, max_size=2)
       .flatmap(lambda d: st.fixed_dictionaries({k: GEN_VALUES[k] for k in d})))
def test_generate(bb, params):
    kw = {**GEN_BASE, **params}
    labels = kw.pop('labels', [1, 2])
    if 'modes' not in params and kw.get('stop_t', 1) == 1: kw['modes'] = torch.randn(2, 4, 8, 8)
    def call():
        g = mgd3.generate(bb, labels, **kw)
        assert torch.isfinite(g.latents).all() and (g.images is None or torch.isfinite(g.images).all())
    outcome('generate', params, call, also=('labels', 'seeds'))   # a mismatch of two arguments may name the other

# ---------------------------------------------------------------- discover_modes
MODES_BASE = dict(ipc=2, method='kmeans', seed=0, num_classes=None, class_names=None, n_jobs=1)
MODES_VALUES = {
    'latents': values(torch.randn(6, 4, 2, 2), torch.randn(6, 16), torch.randn(6, 4, 2, 2) * 1e30),
    'labels': values([0, 0, 0, 1, 1, 1], torch.tensor([1, 1, 1, 0, 0, 0]), [0, 0, 0, 2, 2, 2]),
    'ipc': values(1, 2, 3, cheap_ints=False), 'method': values(*mgd3.list_mode_methods()), 'seed': values(0, 2**32 - 1),
    'num_classes': values(None, 2, 3), 'class_names': values(['a', 'b'], ('x', 'y', 'z')),
    'n_jobs': st.sampled_from([1, 0, -1, 2, True, 1.0, None, 'x', 2**63]),
}

@PROFILE
@given(st.dictionaries(st.sampled_from(sorted(MODES_VALUES)), st.just(None), min_size=1, max_size=2)
       .flatmap(lambda d: st.fixed_dictionaries({k: MODES_VALUES[k] for k in d})))
def test_discover_modes(params):
    kw = {**MODES_BASE, **params}
    z = kw.pop('latents', torch.randn(6, 4, 2, 2, generator=torch.Generator().manual_seed(0)))
    y = kw.pop('labels', [0, 0, 0, 1, 1, 1])
    def call():
        ms = mgd3.discover_modes(z, y, **kw)
        assert torch.isfinite(ms.centroids).all()
    also = ['latents', 'labels'] + (['ipc'] if {'labels', 'num_classes'} & set(params) else [])
    outcome('discover_modes', params, call, also=also)   # too few labels of a class for ipc modes names ipc

# ---------------------------------------------------------------- evaluate
TRAIN = (torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
         torch.tensor([0, 0, 1, 1]))
TEST = (torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)),
        torch.tensor([0, 1]))
NOT_PATHS = st.one_of(st.none(), st.booleans(), SMALL_INTS, FLOATS, st.lists(SMALL_INTS, max_size=3), TENSORS,
                      st.tuples(TENSORS, TENSORS), st.just(object()))
EVAL_VALUES = {
    'train': NOT_PATHS | st.sampled_from([TRAIN, (TRAIN[0].float() / 255, TRAIN[1])]),
    'test': NOT_PATHS | st.sampled_from([TEST]), 'net': values('convnet3', 'resnet18'),
    'protocol': values('hard', 'soft'), 'preset': values('quick', 'mnist5k', 'rded', 'imagenet'),
    'epochs': values(None, 1, 2, cheap_ints=False), 'seed': values(0, 2**32 - 1), 'teacher': values(None),
    'teacher_classes': values(None), 'num_classes': values(None, 2, 3, cheap_ints=False),
    'generation_seed': values(None, 3), 'device': values(None, 'cpu', 'cuda'), 'log': values(None, print),
}
COSTLY = {'image_size', 'test_resize', 'epochs', 'soft_epochs', 'evals', 'eval_every', 'batch_size', 'test_batch_size',
          'large_batch_size', 'shuffle_patches', 'large_nclass'}   # ints whose valid size is run time or memory
OVERRIDES = {f: values(cheap_ints=f not in COSTLY) for f in mgd3.EvalConfig.__dataclass_fields__}
RELATED = {'preset': ('image_size', 'channels'), 'test': ('image_size', 'channels'),
           'train': ('image_size', 'channels'),
           'net': ('evaluation network',), 'protocol': ('teacher', 'preset'), 'labels': ('preset',),
           'image_size': ('px',), 'test_resize': ('crop',), 'mean': ('normalises',), 'std': ('normalises',)}

@PROFILE
@given(st.one_of(
    st.dictionaries(st.sampled_from(sorted(EVAL_VALUES)), st.just(None), min_size=1, max_size=2)
      .flatmap(lambda d: st.fixed_dictionaries({k: EVAL_VALUES[k] for k in d})),
    st.sampled_from(sorted(OVERRIDES)).flatmap(lambda f: st.fixed_dictionaries({f: OVERRIDES[f]}))))
def test_evaluate(params):
    kw = dict(net='convnet3', preset='quick', epochs=1, device='cpu') | params
    train, test = kw.pop('train', TRAIN), kw.pop('test', TEST)
    also = [a for p in params for a in RELATED.get(p, ())]
    outcome('evaluate', params, lambda: mgd3.evaluate(train, test, **kw), also=also)
