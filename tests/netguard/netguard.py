"""A network guard for hermetic tests: a connection (or a DNS lookup) to anything but this machine raises
`NetworkAccessBlocked` before a packet leaves, and is recorded even when the code under test swallows the error.

Allowed: AF_UNIX sockets, loopback (127.0.0.0/8, ::1, `localhost`), the unspecified address and this machine's own
host name (jupyter kernels, papermill and torchrun talk over localhost TCP). `install()` patches `socket` in this
process; `sitecustomize.py` beside this file installs it in every Python process started with this folder on
PYTHONPATH (the tests' subprocesses, `nbdev_test` in CI). With MGD3_NETGUARD_LOG set, each refusal is also appended to
that file, so a parent process can fail on refusals that happened in its children."""
import ipaddress, os, socket, sys

LOG_ENV = 'MGD3_NETGUARD_LOG'
blocked: list[str] = []   # the refusals in this process, in order

class NetworkAccessBlocked(RuntimeError):
    "A test tried to reach the network; mgd3's tests must run offline."

_LOCAL_NAMES = {'', 'localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback'}
_orig: dict[str, object] = {}

def _own_names() -> set[str]:
    try: return {socket.gethostname().lower()}
    except OSError: return set()

def is_local_host(host) -> bool:
    "True for None, loopback/unspecified addresses, `localhost` names and this machine's host name."
    if host is None: return True
    if isinstance(host, (bytes, bytearray)): host = bytes(host).decode('ascii', 'replace')
    host = str(host).split('%')[0].strip('[]').lower()   # drop an IPv6 zone and URL brackets
    if host in _LOCAL_NAMES or host.endswith('.localhost'): return True
    try: ip = ipaddress.ip_address(host)
    except ValueError: return host in _own_names()
    if ip.version == 6 and ip.ipv4_mapped: ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified

def is_local_address(address) -> bool:
    "True for an AF_UNIX path (str/bytes) or an (host, port, ...) tuple whose host is local."
    if not isinstance(address, tuple): return True
    return is_local_host(address[0]) if address else True

def _refuse(what:str, target) -> None:
    msg = (f"{what} {target!r} refused: mgd3's tests are hermetic (only loopback and AF_UNIX sockets); "
           "use local files or a local server instead of the network")
    blocked.append(msg)
    log = os.environ.get(LOG_ENV)
    if log:
        try:
            with open(log, 'a', encoding='utf-8') as f:
                f.write(f"pid {os.getpid()} ({' '.join(getattr(sys, 'argv', []))[:160]}): {msg}\n")
        except OSError: pass
    raise NetworkAccessBlocked(msg)

def _connect(self, address):
    if not is_local_address(address): _refuse('connect to', address)
    return _orig['connect'](self, address)

def _connect_ex(self, address):
    if not is_local_address(address): _refuse('connect_ex to', address)
    return _orig['connect_ex'](self, address)

def _sendto(self, data, *args):
    if args and not is_local_address(args[-1]): _refuse('sendto', args[-1])
    return _orig['sendto'](self, data, *args)

def _create_connection(address, *args, **kwargs):
    if not is_local_address(address): _refuse('create_connection to', address)
    return _orig['create_connection'](address, *args, **kwargs)

def _getaddrinfo(host, *args, **kwargs):
    if not is_local_host(host):
        try: ipaddress.ip_address(str(host).split('%')[0])   # a numeric address needs no DNS; connect() decides
        except ValueError: _refuse('DNS lookup of', host)
    return _orig['getaddrinfo'](host, *args, **kwargs)

def installed() -> bool:
    "Whether this process's `socket` module is guarded."
    return (socket.socket.connect is _connect and socket.socket.connect_ex is _connect_ex
            and socket.socket.sendto is _sendto and socket.create_connection is _create_connection
            and socket.getaddrinfo is _getaddrinfo)

def install() -> None:
    "Guard `socket` in this process (idempotent)."
    if installed(): return
    for name in ('connect', 'connect_ex', 'sendto'): _orig[name] = getattr(socket.socket, name)
    for name in ('create_connection', 'getaddrinfo'): _orig[name] = getattr(socket, name)
    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = _connect, _connect_ex, _sendto
    socket.create_connection, socket.getaddrinfo = _create_connection, _getaddrinfo
