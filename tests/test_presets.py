"""The paper's table presets end to end, on the ImageNet-shaped rehearsal fixtures of `mgd3.testing`: real wnids in an
ImageNet-layout tree of uneven JPEGs, a DiT with DiT-XL/2's widths (one block, random weights), an SD-shaped VAE, and
RDED's ImageNet teacher architecture with random weights. CI runs the Table 1 hard-label preset and the Table 3
soft-label preset (on ImageIDC's 10 classes: sampling ImageNet-1K's 1,000 classes with DiT-XL/2's widths takes about
half an hour on 2 CPU cores); every preset on its own dataset is a slow test."""
import json, sys
from pathlib import Path
import pytest
from PIL import Image
import mgd3
from mgd3.testing import random_teacher_weights
from mgd3.testing import rehearsal_params
from mgd3.paper import TABLE_PRESETS

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def fixtures(tmp_path_factory):
    "One folder for the shared fixtures (the DiT-shaped pipeline, the teacher weights, the data trees)."
    return tmp_path_factory.mktemp('rehearsal')

def _eval(out, method, net):
    return json.loads((Path(out) / 'eval' / method / 'seed0' / f'{net}.json').read_text())

def test_table1_preset_through_papermill_lists_every_row(fixtures, tmp_path):
    "`papermill nbs/run.ipynb -p preset table1-imagenette ...`: every implemented row made, all nine listed."
    import os, subprocess, sys, yaml
    from mgd3.paper import TABLE_ROWS, split_row
    params = rehearsal_params('table1-imagenette', fixtures)
    (tmp_path / 'params.yaml').write_text(yaml.safe_dump(params))
    out_nb = tmp_path / 'out.ipynb'
    subprocess.run([sys.executable, '-m', 'papermill', str(ROOT / 'nbs' / 'run.ipynb'), str(out_nb), '-f',
                    str(tmp_path / 'params.yaml'), '--cwd', str(tmp_path)], check=True, capture_output=True,
                   env={**os.environ, 'MPLBACKEND': 'Agg'})
    printed = ''.join(''.join(o.get('text', '')) for c in json.loads(out_nb.read_text())['cells']
                      for o in c.get('outputs', []) if c['cell_type'] == 'code')
    table = printed[printed.index('the paper reports no number for imagenette IPC 1'):]   # the paper comparison
    rows = TABLE_ROWS['table1-imagenette']
    for row, label in rows:   # nine rows: measured where mgd3 implements the method, else "paper only"
        line = next(l for l in table.splitlines() if l.startswith(f'{label:<28}'))
        implemented = split_row(row)[1] in mgd3.list_methods()
        assert ('measured' in line) == implemented and ('paper only' in line) == (not implemented), line
    assert sum(split_row(r)[1] not in mgd3.list_methods() for r, _ in rows) >= 1   # DM at least
    out, spec = Path(params['out_dir']), mgd3.dataset_spec('imagenette')
    r = mgd3.Run.load(out)
    assert (r.config.dataset, r.config.nets, r.config.protocol) == ('imagenette', ('resnet_ap10',), 'hard')
    assert r.modes(0).centroids.shape == (10, 1, 4, 32, 32)   # the DiT's modes; the LDM group's are its own
    made = {m for m in r.config.methods}
    assert {'random_real', 'unguided', 'mgd3', 'd4m'} <= made
    for m in made:
        pngs = sorted((out / 'images' / m / 'seed0').rglob('*.png'))
        assert len(pngs) == 10 and sorted({p.parent.name for p in pngs}) == sorted(spec.wnids)
        assert Image.open(pngs[0]).size == (256, 256)
        e = _eval(out, m, 'resnet_ap10')['config']
        assert (e['image_size'], e['num_classes'], e['test_transform'], e['num_test']) == (224, 10, 'resize 224, centre crop 224', 20)
    ldm = mgd3.Run.load(out / 'ldm')   # the LDM rows: a run of their own, on the LDM's VQ latents
    assert ldm.config.backbone == params['table_groups']['ldm']['backbone'] and ldm.config.preset is None
    assert set(ldm.config.methods) == {'unguided', 'd4m', 'mgd3'}
    assert json.loads((out / 'ldm' / 'manifest.json').read_text())['status'] == 'complete'
    man = json.loads((out / 'manifest.json').read_text())
    assert man['config']['preset'] == 'table1-imagenette' and man['status'] == 'complete'
    assert {'samples.png', 'modes.png', 'accuracy.png'} <= {p.name for p in (out / 'figures').iterdir()}

def test_table3_soft_label_preset_with_the_hub_teacher_on_a_subset(fixtures, monkeypatch):
    "Table 3's protocol (RDED soft labels, resnet18_bn student, torchvision's ResNet-18 from the hub) on ImageIDC."
    import huggingface_hub
    weights = random_teacher_weights(fixtures / 'teacher.safetensors')
    asked = []
    def hub(repo, filename, **kw):   # the hub, as where it is reachable (no network in tests)
        asked.append((repo, filename))
        return str(weights)
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', hub)
    monkeypatch.setattr(sys.modules['mgd3.preflight'], 'hub_offline', lambda: False)   # the preflight: the hub too
    params = {**rehearsal_params('table3-imagenet1k-soft', fixtures, dataset='imageidc', ipc=2), 'teacher_weights': None,
              'methods': ['mgd3']}   # the protocol and the hub teacher; the slow test below runs every row
    r = mgd3.distill(**params)
    assert set(asked) == {('timm/resnet18.tv_in1k', 'model.safetensors')}
    assert (r.config.protocol, r.config.nets, r.config.teacher) == ('soft', ('resnet18_bn',), 'resnet18.tv_in1k')
    e = _eval(r.out_dir, 'mgd3', 'resnet18_bn')['config']
    spec = mgd3.dataset_spec('imageidc')
    ids = dict(zip(spec.wnids, spec.class_ids))
    assert e['teacher'] == 'resnet18.tv_in1k' and e['teacher_classes'] == [ids[w] for w in sorted(spec.wnids)]
    assert (e['name'], e['test_transform'], e['num_classes'], e['image_size']) == ('rded', 'resize 256, centre crop 224', 10, 224)
    m = r.metrics['methods']['mgd3']
    assert 0 < m['coverage'] <= 1 and m['diversity_raw'] > 0 and m['representativeness_raw'] > 0
    assert 'resnet18.tv_in1k' in r.metrics['feature_space'] and 'diversity_tsne' in m
    assert (Path(r.out_dir) / 'figures' / 'tsne_mgd3.png').exists()

@pytest.mark.slow
@pytest.mark.parametrize('preset', sorted(TABLE_PRESETS))
def test_every_preset_runs_end_to_end_on_its_dataset(fixtures, preset):
    r = mgd3.distill(**rehearsal_params(preset, fixtures))
    spec = mgd3.dataset_spec(TABLE_PRESETS[preset]['dataset'])
    assert r.config.preset == preset and set(r.metrics['methods']) == set(r.config.methods)
    for m in r.config.methods:
        for net in r.config.nets:
            e = _eval(r.out_dir, m, net)['config']
            assert e['num_classes'] == spec.num_classes and e['num_test'] == 2 * spec.num_classes
    assert mgd3.paper_comparison(r.config, r.metrics)
