"""The `mgd3` logger: the library reports through stdlib `logging` (logger `mgd3`, one child per module) and never
prints; it leaves the configuration to the application (only a NullHandler on `mgd3`); stages log their duration."""
import ast, logging
from pathlib import Path
import mgd3
from mgd3.config import DistillConfig
from mgd3.run import Run

PKG = Path(mgd3.__file__).resolve().parent
COMMANDS = {'cli.py'}   # the console script's module prints its results to stdout, by design

def _writes_to_stdout(node:ast.AST) -> bool:
    "A call to print(...), or to sys.stdout.write / sys.stdout.writelines."
    if not isinstance(node, ast.Call): return False
    f = node.func
    if isinstance(f, ast.Name): return f.id == 'print'
    return (isinstance(f, ast.Attribute) and f.attr in ('write', 'writelines') and isinstance(f.value, ast.Attribute)
            and f.value.attr == 'stdout' and isinstance(f.value.value, ast.Name) and f.value.value.id == 'sys')

def test_the_library_never_prints():
    found = []
    for path in sorted(PKG.glob('*.py')):
        if path.name in COMMANDS: continue
        tree = ast.parse(path.read_text(encoding='utf-8'))
        found += [f"{path.name}:{n.lineno}" for n in ast.walk(tree) if _writes_to_stdout(n)]
    assert not found, f"the library prints (use logging.getLogger('mgd3.<module>') instead): {found}"
    # the checker itself finds both forms
    calls = ast.parse("print('x')\nsys.stdout.write('y')\nlog.info('z')").body
    assert [_writes_to_stdout(c.value) for c in calls] == [True, True, False]

def test_the_library_leaves_logging_configuration_to_the_application():
    logger = logging.getLogger('mgd3')
    assert logger.level == logging.NOTSET and logger.propagate
    assert [type(h) for h in logger.handlers] == [logging.NullHandler]

def test_a_stage_logs_its_start_and_duration(tmp_path, caplog):
    run = Run.open(DistillConfig.from_params(out_dir=str(tmp_path / 'run'), quick=True))
    with caplog.at_level(logging.INFO, logger='mgd3'):
        with run.stage('latents'): pass
    msgs = [(r.name, r.getMessage()) for r in caplog.records]
    assert ('mgd3.run', f'{run.folder}: latents') in msgs
    assert any(n == 'mgd3.run' and m.startswith(f'{run.folder}: latents done in ') and m.endswith(' s') for n, m in msgs)
    assert 'latents' in run.manifest.timings
