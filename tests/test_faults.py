"""Issue 8, faults: a tiny embedded `distill()` (mgd3.testing) is SIGKILLed at seven points (during encoding,
mode discovery, the writing of real and of generated PNGs, sampling, evaluation, and — from outside, by polling the
run folder — during the metrics), hit by a disk-full error and by a file in the way of a class folder; after each
fault every file left behind is whole, and the resumed run ends with the image hashes of an uninterrupted run.

Temporary files: a write goes to `.<name>.<random>.tmp` beside its target, then is renamed (mgd3.core.atomic_save /
atomic_write). A killed process can leave such a file behind; it is IGNORED, never cleaned: no reader matches it (not
`*.png`, `*.json` or `*.safetensors`), and deleting it is always safe (`find runs -name '.*.tmp' -delete`)."""
import json, os, re
from pathlib import Path
import pytest
from _fault_runner import fault_report, CHAIN

pytestmark = pytest.mark.skipif(not hasattr(os, 'fork'), reason='the fault runner forks one child per run (POSIX)')

@pytest.fixture(scope='module')
def report(): return fault_report()[0]

def _step(report, fault): return next(s for s in report['steps'] if s['fault'] == fault)

KILLS = ['kill-encoding', 'kill-modes', 'kill-png-real', 'kill-sampling', 'kill-png-generated', 'kill-evaluation',
         'external-kill']

# where each kill must have landed, read from the files it left (see _fault_runner.evidence)
LANDED = {
    'kill-encoding': lambda b, a: 1 <= a['shards'] < 10 and 'encode' not in a['finished'],
    'kill-modes': lambda b, a: a['shards'] == 10 and 'encode' in a['finished'] and not a['modes'],
    'kill-png-real': lambda b, a: a['modes'] and 0 < a['png_mdo'] < 20 and not a['done_mdo'],
    'kill-sampling': lambda b, a: a['done_mdo'] and a['png_mgd3'] == 0,
    'kill-png-generated': lambda b, a: 0 < a['png_mgd3'] < 20,
    'kill-evaluation': lambda b, a: a['png_mgd3'] == 20 and a['evals'] == 1,
    'external-kill': lambda b, a: a['evals'] == 2 and not a['metrics'],
}

@pytest.mark.parametrize('fault', KILLS)
def test_kill_point_leaves_only_whole_files(report, fault):
    s = _step(report, fault)
    assert s['signal'] == 9, f"{fault}: the run was not SIGKILLed: {s}"
    assert LANDED[fault](s['before'], s['after']), f"{fault}: killed elsewhere: {s['after']}"
    assert s['files']['bad'] == [], f"{fault}: partial or corrupt files: {s['files']['bad']}"
    assert all(re.fullmatch(r'\..+\.tmp', Path(t).name) for t in s['files']['tmp'])

def test_png_kills_leave_only_ignored_temporaries(report):
    "The half-written PNGs of the two PNG kills exist only as `.<name>.png.<random>.tmp`, never as a `*.png`."
    for fault, folder in (('kill-png-real', 'images/mode_discovery_only/'), ('kill-png-generated', 'images/mgd3/')):
        tmp = _step(report, fault)['files']['tmp']
        assert any(t.startswith(folder) and re.search(r'/\.\d+\.png\.\w+\.tmp$', t) for t in tmp), tmp

def test_disk_full_is_reported_clearly_and_resumes(report):
    s = _step(report, 'disk-full')
    assert s['exit'] == 3 and s['error']['errno'] == 28, s
    assert re.search(r"cannot write .*images/mgd3/seed0/\d+/\d\.png: No space left on device; free disk space",
                     s['error']['message'])
    assert s['before']['png_mgd3'] < s['after']['png_mgd3'] < 20     # the first files were kept
    assert s['files']['bad'] == []

def test_unwritable_class_folder_is_reported_clearly_and_resumes(report):
    s = _step(report, 'blocked-class-folder')
    assert s['exit'] == 3, s
    assert re.search(r"cannot create folder .*images/mgd3/seed0/9 for 0\.png: .*choose a writable location \(or move "
                     r"the file in its way\), then rerun", s['error']['message'])
    assert s['after']['png_mgd3'] == 18 and s['files']['bad'] == []   # every class but the blocked one is done
    assert _step(report, 'kill-evaluation')['after']['png_mgd3'] == 20   # and once it is moved, the rerun finishes it

def test_resumed_run_equals_an_uninterrupted_run(report):
    _, work = fault_report()
    last = report['steps'][-1]
    assert last['fault'] == 'none' and last['exit'] == 0 and last['after']['metrics']
    assert report['ref_a']['exit'] == 0 and report['ref_a']['files']['bad'] == []
    chain = json.loads((work / 'chain' / 'manifest.json').read_text())
    ref = json.loads((work / 'ref_a' / 'manifest.json').read_text())
    assert chain['status'] == ref['status'] == 'complete'
    assert len(ref['images']) == 40 and chain['images'] == ref['images']
    # the stale temporaries are still there, and were not taken for images
    assert last['files']['tmp'] and not any(Path(t).name in {Path(i).name for i in chain['images']} for t in last['files']['tmp'])

def test_every_manifest_that_lists_images_lists_the_uninterrupted_hashes(report):
    "Once a (re-)run has recorded the image hashes in manifest.json, they are those of the uninterrupted run."
    ref = report['ref_a']['after']['images']
    listed = [s['fault'] for s in report['steps'] if s['after']['images']]
    assert ref and listed == ['kill-evaluation', 'external-kill', 'none']   # all images exist from kill-evaluation on
    assert all(s['after']['images'] == ref for s in report['steps'] if s['after']['images'])

def test_counts(report):
    survived = [f for f in KILLS if _step(report, f)['signal'] == 9 and not _step(report, f)['files']['bad']]
    print(f"kill points survived: {len(survived)}/{len(KILLS)}; write faults: 2; runner seconds: {report['seconds']}")
    assert len(survived) == len(KILLS) == 7 and len(CHAIN) == 10
