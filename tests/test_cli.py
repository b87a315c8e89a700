"""The installed `mgd3` console script, run in subprocesses: `--help` shows DistillConfig's parameters with the
paper's defaults, a config file and flags add up (flags win), bad input is one line and exit status 2, and a quick
embedded run with a tiny random backbone goes distill → export → evaluate, the evaluation reproducing the run's.
`mgd3 sweep` both ways: without the module `mgd3.sweep` the other subcommands work and `sweep` is refused; with it,
a grid file runs (these tests skip where the module is absent)."""
import json, shutil, subprocess, sys
from importlib.metadata import entry_points
from pathlib import Path
import pytest
import mgd3, mgd3.cli

def _script() -> str:
    "The installed console script (CI installs the package with `pip install -e .`, which writes it)."
    eps = [e for e in entry_points(group='console_scripts') if e.name == 'mgd3']
    assert eps and eps[0].value == 'mgd3.cli:main', "no 'mgd3' console script installed: run pip install -e ."
    exe = Path(sys.executable).parent / 'mgd3'
    exe = exe if exe.exists() else Path(shutil.which('mgd3') or 'mgd3')
    assert exe.exists(), f"the console script is declared but {exe} does not exist"
    return str(exe)

def mgd3_cmd(*args, cwd=None, check=True):
    r = subprocess.run([_script(), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=1200)
    if check and r.returncode != 0:
        raise AssertionError(f"mgd3 {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r

def _words(text): return ' '.join(text.split())

def test_help_shows_every_run_parameter_with_its_default():
    out = _words(mgd3_cmd('distill', '--help').stdout)
    for name, default, help in mgd3.DistillConfig.parameters():
        shown = ', '.join(map(str, default)) if isinstance(default, tuple) else 'none' if default is None else default
        assert f'--{name}' in out and _words(f"{help} (default: {shown})") in out, name
    for paper in ('(paper: 0.1) (default: 0.1)', '(paper: 25 of 50) (default: 25)', '(paper: 50) (default: 50)',
                  '8.0 for SD) (default: none)'):
        assert paper in out
    top = mgd3.cli.build_parser().format_help()
    assert all(c in top for c in ('distill', 'evaluate', 'validate', 'export', 'explore'))

def test_config_file_and_flags(tmp_path):
    (tmp_path / 'run.yaml').write_text('ipc: 20\nseeds: [0, 1]\nquick: true\nnets: [convnet6]\nbackbone: elsewhere\n')
    r = mgd3_cmd('distill', '--config', tmp_path / 'run.yaml', '--seeds', '3,4', '--seeds', '5', '--nets', 'convnet3',
                 'resnet18', '--no-quick', '--mode-guidance-scale', '0.05', '--backbone', 'none', '--print-config')
    cfg = json.loads(r.stdout)
    assert (cfg['ipc'], cfg['seeds'], cfg['nets'], cfg['quick']) == (20, [3, 4, 5], ['convnet3', 'resnet18'], False)
    assert (cfg['mode_guidance_scale'], cfg['stop_t'], cfg['out_dir']) == (0.05, 25, 'runs/mnist5k-ipc20')
    assert cfg['backbone'] == 'tiny-mnist'   # `none` undid the file's value: the default again

def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    r = mgd3_cmd('distill', '--ipc', '0', '--print-config', check=False)
    assert r.returncode == 2 and 'mgd3 distill: error: ipc must be a positive int' in r.stderr
    assert 'Traceback' not in r.stderr
    (tmp_path / 'bad.yaml').write_text('lambda: 0.1\n')   # the same path in this process, for the other cases
    assert mgd3.cli.main(['distill', '--config', str(tmp_path / 'bad.yaml')]) == 2
    assert "unknown run parameters ['lambda']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: mgd3.cli.main(['distill', '--seeds', 'x'])
    assert e.value.code == 2 and "--seeds takes int values, got 'x'" in capsys.readouterr().err
    assert mgd3.cli.main(['validate', str(tmp_path / 'nowhere'), '--dataset', 'imagenette']) == 1
    assert 'PROBLEMS FOUND' in capsys.readouterr().out

def test_distill_export_evaluate_end_to_end(tiny_mnist_pipeline, tmp_path):
    (tmp_path / 'quick.yaml').write_text(
        'ipc: 2\nseeds: [0]\nnum_inference_steps: 4\nstop_t: 2\nepochs: 1\nquick: true\nmethods: [mgd3]\n')
    run = tmp_path / 'run'
    r = mgd3_cmd('distill', '--config', tmp_path / 'quick.yaml', '--backbone', tiny_mnist_pipeline, '--out_dir', run,
                 '--device', 'cpu')
    assert f'run folder: {run}' in r.stdout and 'mgd3' in r.stdout.splitlines()[2]
    assert 'mgd3.run: ' in r.stderr and 'images/mgd3 done in' in r.stderr and 'mgd3.evaluate: convnet3' in r.stderr
    man = json.loads((run / 'manifest.json').read_text())
    assert man['status'] == 'complete' and man['config']['methods'] == ['mgd3']

    dest = tmp_path / 'set'
    assert mgd3_cmd('export', run, '--method', 'mgd3', '--dest', dest).stdout.strip() == str(dest)
    s = mgd3.load_distilled(dest)
    assert len(s.rows) == 20 and s.info['method'] == 'mgd3' and s.soft_labels.shape == (20, 10)
    r = mgd3_cmd('export', run, '--dest', dest, check=False)
    assert r.returncode == 2 and 'exists and is not empty' in r.stderr

    # the exported pack, evaluated by `mgd3 evaluate`, gives the run's own numbers (same set, protocol and seed)
    res = tmp_path / 'eval.json'
    mgd3_cmd('evaluate', dest / 'distilled.safetensors', '--config', tmp_path / 'quick.yaml', '--device', 'cpu',
             '--out', res)
    got = json.loads(res.read_text())['results']['convnet3']
    want = json.loads((run / 'eval/mgd3/seed0/convnet3.json').read_text())
    assert (got['best_acc'], got['final_acc'], got['history']) == (want['best_acc'], want['final_acc'], want['history'])

def test_without_the_sweep_module_the_other_commands_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, 'mgd3.sweep', None)   # an mgd3 without nbs/18_sweep.ipynb: the import fails
    assert not mgd3.cli.has_sweep()
    assert 'comes with the module mgd3.sweep' in mgd3.cli.build_parser().format_help()
    (tmp_path / 'grid.yaml').write_text('stop_t: [10, 20]\n')
    with pytest.raises(SystemExit) as e: mgd3.cli.main(['sweep', str(tmp_path / 'grid.yaml'), str(tmp_path / 's')])
    assert e.value.code == 2 and "invalid choice: 'sweep'" in capsys.readouterr().err
    assert mgd3.cli.main(['distill', '--ipc', '3', '--print-config']) == 0
    assert json.loads(capsys.readouterr().out)['ipc'] == 3

def test_sweep_lists_the_points_of_a_grid_file(tmp_path, capsys):
    pytest.importorskip('mgd3.sweep', reason='mgd3.sweep (nbs/18_sweep.ipynb) is not in this mgd3')
    assert mgd3.cli.has_sweep() and 'sweep' in mgd3.cli.build_parser().format_help()
    (tmp_path / 'grid.yaml').write_text('mode_guidance_scale: [0.05, 0.2]\nstop_t: [10]\n')
    assert mgd3.cli.main(['sweep', str(tmp_path / 'grid.yaml'), str(tmp_path / 'sweep'), '--ipc', '2',
                          '--print-points']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all('"ipc": 2' in l and '"stop_t": 10' in l for l in lines)
    assert '"mode_guidance_scale": 0.05' in lines[0] and '"mode_guidance_scale": 0.2' in lines[1]

@pytest.mark.slow   # a 2-point sweep through the installed command (tests/test_sweep.py covers the sweep in CI)
def test_sweep_runs_a_grid_from_the_command_line(tiny_mnist_pipeline, tmp_path):
    pytest.importorskip('mgd3.sweep', reason='mgd3.sweep (nbs/18_sweep.ipynb) is not in this mgd3')
    (tmp_path / 'grid.json').write_text('{"stop_t": [2]}')
    (tmp_path / 'base.yaml').write_text('ipc: 2\nseeds: [0]\nnum_inference_steps: 4\nepochs: 1\nquick: true\n'
                                        'methods: [mgd3]\n')
    out = tmp_path / 'sweep'
    r = mgd3_cmd('sweep', tmp_path / 'grid.json', out, '--config', tmp_path / 'base.yaml', '--backbone',
                 tiny_mnist_pipeline, '--device', 'cpu', '--no-figures')
    tables = list(out.glob('*.md'))   # the sweep's markdown table, printed
    assert f'sweep folder: {out}' in r.stdout and len(tables) == 1
    assert tables[0].read_text().strip() in r.stdout and 'mgd3' in r.stdout and 'convnet3' in r.stdout
    runs = [p for p in out.iterdir() if (p / 'manifest.json').is_file()]
    assert len(runs) == 1
    man = json.loads((runs[0] / 'manifest.json').read_text())
    assert man['status'] == 'complete' and man['config']['stop_t'] == 2 and man['config']['ipc'] == 2
