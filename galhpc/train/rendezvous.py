"""Where the ranks of a multi-node job meet: the rendezvous host and the network interface.

- `expand_nodelist`: a Slurm host list (`SLURM_JOB_NODELIST`, e.g. `gpu[007-009,12],login1`)
  as host names, in Slurm's order, without calling `scontrol show hostnames`;
- `interface_for`: the network interface whose address the kernel would use to reach a
  host (a UDP `connect`, which sends nothing, then the interface holding that address);
- `job_interface`: the interface towards the job's other hosts: the first of the
  rendezvous host and the job's nodes that is reached through a non-loopback address (on
  the rendezvous node itself, its own name may resolve to 127.0.1.1, as Debian's
  /etc/hosts has it; the next node of the job then tells the interface), else `lo`;
- `socket_interface_env`: `GLOO_SOCKET_IFNAME` and `NCCL_SOCKET_IFNAME` (or other
  variables named) set to that interface unless the user set them.  Without them gloo
  binds to the address its host name resolves to, which on many clusters (Debian's
  `127.0.1.1 host` line, or a name on the management network) is not the one the other
  nodes can reach.
"""

from __future__ import annotations

import fcntl
import ipaddress
import re
import socket
import struct
from collections.abc import Mapping
from pathlib import Path

from galhpc.runtime.errors import GalhpcError

INTERFACE_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


class RendezvousError(GalhpcError, RuntimeError):
    """A host list that cannot be read, or a host no interface routes to."""


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: 'a[1,2],b' -> ['a[1,2]', 'b']."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        if depth not in (0, 1):
            raise RendezvousError(f"unbalanced brackets in Slurm host list {text!r}")
    if depth != 0:
        raise RendezvousError(f"unbalanced brackets in Slurm host list {text!r}")
    parts.append(text[start:])
    return parts


def _expand_ranges(ranges: str, nodelist: str) -> list[str]:
    """'007-009,12' -> ['007', '008', '009', '12'] (width of a range is its lower bound's)."""
    out = []
    for item in ranges.split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not match:
            raise RendezvousError(f"cannot read range {item!r} in Slurm host list {nodelist!r}")
        low, high = match.group(1), match.group(2) or match.group(1)
        if int(high) < int(low):
            raise RendezvousError(f"range {item!r} runs backwards in Slurm host list {nodelist!r}")
        out.extend(str(n).zfill(len(low)) for n in range(int(low), int(high) + 1))
    return out


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a Slurm host list, in order, as `scontrol show hostnames` prints them.

    Parameters
    ----------
    nodelist : str
        e.g. ``"node[0-3]"``, ``"gpu[007-009,12],login1"``, ``"r[1-2]n[01-02]"`` (several
        bracket groups expand as a product, the last varying fastest).

    Returns
    -------
    list of str
        One name per host; zero padding follows each range's lower bound (``[08-10]`` ->
        ``08, 09, 10``).

    Raises
    ------
    RendezvousError
        Empty list, unbalanced brackets or a range that is not ``N`` or ``N-M``.
    """
    text = nodelist.strip()
    if not text:
        raise RendezvousError("empty Slurm host list")
    hosts: list[str] = []
    for item in _split_top_level(text):
        if not item:
            raise RendezvousError(f"empty host name in Slurm host list {nodelist!r}")
        names = [""]
        for literal, bracket, ranges in re.findall(r"([^\[\]]*)(\[([^\]]*)\])?", item):
            values = _expand_ranges(ranges, nodelist) if bracket else [""]
            names = [name + literal + value for name in names for value in values]
        hosts.extend(names)
    return hosts


def _interface_addresses() -> dict[str, list[str]]:
    """Addresses of every interface of this network namespace: {'eth0': ['10.0.0.5', 'fe80::1'], ...}."""
    found: dict[str, list[str]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:  # no IPv4 address
                continue
            found.setdefault(name, []).append(socket.inet_ntoa(packed[20:24]))
    inet6 = Path("/proc/net/if_inet6")
    if inet6.exists():
        for line in inet6.read_text().splitlines():
            fields = line.split()
            address = str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
            found.setdefault(fields[-1], []).append(address)
    return found


def _route(host: str) -> tuple[str, str]:
    """(local address, interface name) this process would use to reach `host`."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, 9, proto=socket.IPPROTO_UDP)[0]
    except socket.gaierror as err:
        raise RendezvousError(f"rendezvous host {host!r} does not resolve: {err}") from None
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(sockaddr)  # a route lookup: UDP sends nothing on connect
            local = sock.getsockname()[0].split("%")[0]
    except OSError as err:
        raise RendezvousError(f"no route to rendezvous host {host!r} ({sockaddr[0]}): {err}") from None
    for name, addresses in _interface_addresses().items():
        if local in addresses:
            return local, name
    raise RendezvousError(f"no interface holds {local}, this host's address towards {host!r}")


def interface_for(host: str) -> str:
    """The interface this process would use to reach `host` (a name or an address).

    A UDP socket is connected to `host` (a route lookup: no packet is sent) and the
    interface holding the local address the kernel chose is returned.

    Parameters
    ----------
    host : str
        Host name (resolved here) or IPv4/IPv6 address, e.g. the job's ``MASTER_ADDR``.

    Returns
    -------
    str
        Interface name, e.g. ``"eth0"``, ``"ib0"``, ``"lo"`` for this host's loopback.

    Raises
    ------
    RendezvousError
        `host` does not resolve, no route leads to it, or no interface holds the address.
    """
    return _route(host)[1]


def job_interface(hosts: list[str]) -> str:
    """The interface towards the job's other hosts.

    Parameters
    ----------
    hosts : list of str
        The rendezvous host first, then the job's nodes (`expand_nodelist`).

    Returns
    -------
    str
        The interface of the first host reached through a non-loopback local address
        (hosts that do not resolve are skipped); ``"lo"`` when the others are reached
        through loopback (a one-node job).

    Raises
    ------
    RendezvousError
        `hosts` is empty, or no host resolves with a route to it (the first host's error).
    """
    if not hosts:
        raise RendezvousError("no rendezvous host given")
    errors, loopback = [], False
    for host in hosts:
        try:
            local, name = _route(host)
        except RendezvousError as err:  # e.g. a Slurm node name that does not resolve
            errors.append(err)
            continue
        if not ipaddress.ip_address(local).is_loopback:
            return name
        loopback = True
    if loopback:
        return "lo"
    raise errors[0]


def rendezvous_hosts(master: str, env: Mapping[str, str]) -> list[str]:
    """The rendezvous host, then the job step's nodes when Slurm lists several.

    Parameters
    ----------
    master : str
        The rendezvous host (``MASTER_ADDR``).
    env : mapping
        The environment: ``SLURM_STEP_NODELIST`` or ``SLURM_JOB_NODELIST`` are read.

    Returns
    -------
    list of str
        ``[master, node, ...]`` without repeats: the argument `job_interface` takes.
    """
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    nodes = expand_nodelist(nodelist) if nodelist else []
    return list(dict.fromkeys([master, *nodes])) if len(nodes) > 1 else [master]


def socket_interface_env(hosts: list[str], env: Mapping[str, str],
                         names: tuple[str, ...] = INTERFACE_VARS) -> dict[str, str]:
    """The interface variables to add so that gloo and NCCL use the route to the job's hosts.

    Parameters
    ----------
    hosts : list of str
        The rendezvous host first, then the job's nodes (see `job_interface`).
    env : mapping
        The current environment: variables already set there are kept, never overridden.
    names : tuple of str
        The variables to fill (default `INTERFACE_VARS`; Horovod's gloo controller reads
        ``HOROVOD_GLOO_IFACE``).

    Returns
    -------
    dict
        ``{variable: interface}`` for each of `names` not in `env` (empty when all are
        set, so no route is looked up).

    Raises
    ------
    RendezvousError
        As `job_interface`, when a variable is missing.
    """
    missing = [var for var in names if var not in env]
    if not missing:
        return {}
    interface = job_interface(hosts)
    return {var: interface for var in missing}
