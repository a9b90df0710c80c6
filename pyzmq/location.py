"""Locations: where a global exchange or queue listens, and what it advertises.

A location is ``"host:port"``, ``"interface:port"`` (a NIC name such as
``eth0:5555``), ``"*:port"``, a host or NIC alone, or ``""``.  A missing port,
``*`` or ``0`` lets the OS choose a free one.  ``*``, ``0.0.0.0`` and ``""``
listen on every interface.

The directory must record an address other hosts can reach, never ``*`` or
``0.0.0.0``: for a wildcard we advertise this host's address on the route to
the directory.  Only IPv4 is supported.
"""

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass

from pyzmq.errors import Error

_SIOCGIFADDR = 0x8915


def format_hostport(host, port):
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_address(host, port):
    """``host:port`` for a client of a server listening on ``host``: a
    wildcard listen address is reached on the loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return format_hostport(host, port)


# getaddrinfo's answers that the name does not exist (not a lookup that
# failed for now)
_NO_SUCH_NAME = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n)}


def check_directory_host(hostname):
    """Raise DirectoryUnreachable, saying so, when the host of a directory's
    ``host[:port]`` does not resolve.  libzmq reports a name it cannot
    resolve as a connection retry, which read as "Connection refused" and
    sent the user to start a zmq_server instead of to check the name."""
    from pyzmq.directory import DirectoryUnreachable, parse_hostname
    host, port = parse_hostname(hostname)
    try:
        ipaddress.ip_address(host)
        return                          # an address: nothing to resolve
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno not in _NO_SUCH_NAME:
            return      # a failure that may pass (EAI_AGAIN...): libzmq keeps trying
        reason = f"host name does not resolve ({exc.strerror})"
        raise DirectoryUnreachable(
            f"cannot reach the directory at {format_hostport(host, port)}: {reason}; "
            f"check the host name, or give its IP address", reason) from None


@dataclass(frozen=True)
class Location:
    host: str            # IPv4 address to listen on, or "*" for every interface
    port: int            # 0: any free port

    @property
    def endpoint(self):
        """The libzmq endpoint to bind."""
        return f"tcp://{self.host}:{self.port or '*'}"

    def advertised(self, bound_endpoint, route_ip):
        """The "IP:port" to register, given the endpoint libzmq bound and this
        host's address on the route to the directory."""
        port = int(bound_endpoint.rsplit(":", 1)[1])
        host = route_ip if self.host == "*" else self.host
        return f"{host}:{port}"


def interface_names():
    return {name for _, name in socket.if_nameindex()}


def interface_ipv4(name):
    """The IPv4 address of a network interface (e.g. 'eth0')."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR,
                                 struct.pack("256s", name.encode()[:15]))
        except OSError as e:
            raise Error(f"interface {name!r} has no IPv4 address ({e.strerror})") from None
    return socket.inet_ntoa(packed[20:24])


def _parse_port(text, location):
    if text in ("", "*", "0"):
        return 0
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r} in location {location!r}: "
                         "use a number from 1 to 65535, or * for any free port")
    return int(text)


def _resolve_host(host, location):
    if host in ("", "*", "0.0.0.0"):
        return "*"
    if host.isdigit() and location == host:
        # a port meant ("5555"); read as a host it is an IPv4 number (0.0.21.179)
        raise ValueError(f"location {location!r} is a bare number, which would be read as a "
                         f"host: for a port write '*:{host}' (every interface) or "
                         f"'127.0.0.1:{host}' (this host only)")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if host in interface_names():
        return interface_ipv4(host)
    try:
        return socket.gethostbyname(host)
    except (socket.gaierror, UnicodeError):
        raise ValueError(f"location {location!r}: {host!r} is neither an IPv4 address, "
                         "a network interface of this host nor a resolvable host name") from None


def parse_location(location):
    """Turn a location string into a Location; ValueError says what is wrong."""
    if not isinstance(location, str):
        raise TypeError(f"location must be a str such as 'eth0:5555', not {type(location).__name__}")
    if any(c.isspace() for c in location) or len(location) > 255:
        raise ValueError(f"malformed location {location!r}: expected 'host:port', "
                         "'interface:port', '*:port' or ''")
    if location.count(":") > 1:
        raise ValueError(f"malformed location {location!r}: expected 'host:port' "
                         "(IPv6 addresses are not supported)")
    host, _, port = location.partition(":")
    if _ and host == "" and port == "":
        raise ValueError(f"malformed location {location!r}")
    return Location(_resolve_host(host, location), _parse_port(port, location))
