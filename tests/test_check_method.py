"""Issue 25, the plug-in check: every registered method passes `mgd3.testing.check_method` at toy size (end to end,
determinism, batch invariance where claimed, resume after a SIGKILL, export). About a minute per method on one CPU
thread, so the sweep over `list_methods()` is slow; the notebook (98_testing) keeps a fast negative control."""
import pytest
import mgd3
from mgd3.methods import list_methods
from mgd3.testing import check_method, MethodCheckError

@pytest.mark.slow
@pytest.mark.parametrize('name', list_methods())
def test_every_registered_method_passes_the_plug_in_check(name, tmp_path):
    got = check_method(name, tmp_path)
    assert got.checks['end_to_end'] == got.checks['determinism'] == got.checks['export'] == 'ok', got
    assert got.checks['resume'] in ('ok', 'skipped: no os.fork on this platform'), got
    assert got.checks['batch_invariance'] == ('ok' if mgd3.get_method(name).batch_invariant else
                                              'skipped: the method does not claim it (batch_invariant=False)')

def test_an_unknown_method_is_refused_with_the_valid_names(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'; valid names: .*mgd3"):
        check_method('nope', tmp_path)

def test_the_check_error_is_an_assertion():
    assert issubclass(MethodCheckError, AssertionError)
