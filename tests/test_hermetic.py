"""The test session is hermetic: Hugging Face offline mode is on, and the network guard (tests/netguard) refuses any
connection or DNS lookup that would leave this machine (here and in subprocesses) while loopback and AF_UNIX work.

Every attempt below first checks that the guard is installed, so a broken guard fails the test without a packet
being sent."""
import contextlib, os, socket, subprocess, sys, textwrap, threading
from pathlib import Path
import pytest
import netguard
from netguard import NetworkAccessBlocked

HERE = Path(__file__).resolve().parent
PUBLIC = [('1.1.1.1', 443), ('8.8.8.8', 53), ('2606:4700:4700::1111', 443), ('huggingface.co', 443)]

@contextlib.contextmanager
def expected_refusals(n_min:int=1):
    "Consume the refusals made inside the block (they are the point of the test), checking there were some."
    assert netguard.installed(), 'the network guard is not installed: refusing to try a real connection'
    log = Path(os.environ[netguard.LOG_ENV]); offset = log.stat().st_size if log.exists() else 0
    start = len(netguard.blocked)
    yield
    lines = []
    if log.exists():
        with open(log, encoding='utf-8') as f: f.seek(offset); lines = f.read().splitlines()
    made = len(netguard.blocked) - start + sum(not l.startswith(f'pid {os.getpid()} ') for l in lines)
    del netguard.blocked[start:]
    if log.exists(): os.truncate(log, offset)
    assert made >= n_min, 'no refusal was recorded'

def test_offline_variables_are_set_before_the_hub_is_imported():
    for var in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_DATASETS_OFFLINE'): assert os.environ[var] == '1'
    import huggingface_hub.constants
    assert huggingface_hub.constants.HF_HUB_OFFLINE

@pytest.mark.parametrize('host,port', PUBLIC)
def test_guard_refuses_connections_off_this_machine(host, port):
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with expected_refusals(3):
        with pytest.raises(NetworkAccessBlocked, match='hermetic'): socket.create_connection((host, port), timeout=1)
        with socket.socket(family, socket.SOCK_STREAM) as s:
            with pytest.raises(NetworkAccessBlocked): s.connect((host, port))
            with pytest.raises(NetworkAccessBlocked): s.connect_ex((host, port))

def test_guard_refuses_dns_and_udp():
    with expected_refusals(2):
        with pytest.raises(NetworkAccessBlocked, match='DNS lookup'): socket.getaddrinfo('huggingface.co', 443)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(NetworkAccessBlocked): s.sendto(b'x', ('8.8.8.8', 53))

def test_guard_records_what_the_code_swallows():
    with expected_refusals(1):
        n = len(netguard.blocked)
        try: socket.create_connection(('1.1.1.1', 80), timeout=1)
        except Exception: pass   # as a library's "offline? fall back" handler would
        assert len(netguard.blocked) == n + 1 and '1.1.1.1' in netguard.blocked[-1]

def _echo_server(family, address):
    srv = socket.socket(family, socket.SOCK_STREAM); srv.bind(address); srv.listen(1)
    def serve():
        conn, _ = srv.accept()
        with conn: conn.sendall(conn.recv(64).upper())
    threading.Thread(target=serve, daemon=True).start()
    return srv

def test_loopback_tcp_works():
    for host in ('127.0.0.1', 'localhost'):
        srv = _echo_server(socket.AF_INET, ('127.0.0.1', 0))
        with srv, socket.create_connection((host, srv.getsockname()[1]), timeout=5) as c:
            c.sendall(b'ping'); assert c.recv(64) == b'PING'
    assert socket.getaddrinfo('localhost', 80) and socket.getaddrinfo(socket.gethostname(), 80)

def test_ipv6_loopback_works():
    if not socket.has_ipv6: pytest.skip('no IPv6 in this Python')
    try: srv = _echo_server(socket.AF_INET6, ('::1', 0))
    except OSError: pytest.skip('no IPv6 loopback on this machine')
    with srv, socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as c:
        c.settimeout(5); c.connect(('::1', srv.getsockname()[1])); c.sendall(b'ping'); assert c.recv(64) == b'PING'

def test_unix_sockets_work(tmp_path):
    a, b = socket.socketpair()
    with a, b: a.sendall(b'ping'); assert b.recv(64) == b'ping'
    path = str(tmp_path / 'sock')
    srv = _echo_server(socket.AF_UNIX, path)
    with srv, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5); c.connect(path); c.sendall(b'ping'); assert c.recv(64) == b'PING'

def test_subprocesses_are_guarded_and_report_back():
    code = textwrap.dedent('''
        import socket, netguard
        assert netguard.installed(), 'guard missing in the child'
        try: socket.create_connection(('1.1.1.1', 443), timeout=1)
        except netguard.NetworkAccessBlocked: print('refused')
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)
        socket.create_connection(s.getsockname(), timeout=5).close(); print('loopback ok')
    ''')
    log = Path(os.environ[netguard.LOG_ENV]); before = log.read_text() if log.exists() else ''
    with expected_refusals(0):
        out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ['refused', 'loopback', 'ok']
        new = (log.read_text() if log.exists() else '')[len(before):]
        assert "create_connection to ('1.1.1.1', 443) refused" in new and f'pid {os.getpid()} ' not in new

def test_a_swallowed_attempt_fails_the_test_and_the_session(tmp_path):
    "An inner pytest session with this conftest: the test that swallowed a refusal errors, the session fails."
    (tmp_path / 'conftest.py').write_text(textwrap.dedent(f'''
        from pathlib import Path
        _real = Path({str(HERE / 'conftest.py')!r})
        _ns = {{'__file__': str(_real), '__name__': 'mgd3_conftest'}}
        exec(compile(_real.read_text(), str(_real), 'exec'), _ns)
        globals().update({{k: v for k, v in _ns.items() if not k.startswith('__')}})
    '''))
    (tmp_path / 'test_inner.py').write_text(textwrap.dedent('''
        import socket, netguard
        def test_swallows():
            assert netguard.installed()
            try: socket.create_connection(('1.1.1.1', 443), timeout=1)
            except Exception: pass
        def test_clean(): pass
    '''))
    env = {**os.environ, netguard.LOG_ENV: str(tmp_path / 'inner.log')}
    out = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'the test tried to use the network' in out.stdout and '2 passed, 1 error' in out.stdout, out.stdout
