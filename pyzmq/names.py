"""``zmq_names``: look at a directory's names from the shell (docs/directory.md).

    zmq_names [-d HOST[:PORT] | -d etcd://H1:P1,H2:P2[/prefix]] [-k KEY] [-s FILE] ls [PATTERN] [--json]
    zmq_names info NAME [--json]
    zmq_names watch [PATTERN] [--json]
    zmq_names ping              # exit status 0 when the directory answers, else 1

``--json`` prints one JSON array (ls) or object (info) with the fields
``name``, ``kind`` (``exchange`` or ``queue``), ``address``, ``key``,
``owner`` (``host``, ``pid``, ``program``) and ``registered`` (ISO time);
for watch one object per line, those fields after ``event`` (``present``
for the snapshot, then ``added``, ``removed``, ``changed``).  Both
directories (``zmq_server`` and etcd) give the same lines.
"""

import argparse
import json
import os
import sys

from pyzmq.errors import Error


def _row(d):
    owner = d["owner"]
    return (f"{d['name']}\t{d['kind']}\t{d['address']}\t{d['key'] or '-'}\t"
            f"{owner['program']}[{owner['pid']}]@{owner['host']}\t{d['registered']}")


_SIGN = {"present": "=", "added": "+", "removed": "-", "changed": "~"}


def _event(kind, d, as_json):
    """One line of ``watch``: ``= row`` (in the snapshot), ``+``, ``-``, ``~``;
    or the JSON object of the record with ``event`` first."""
    if as_json:
        print(json.dumps({"event": kind, **d}), flush=True)
    else:
        print(f"{_SIGN[kind]} {_row(d)}", flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="zmq_names", description="List, inspect and watch the global "
                                     "names of a pyzmq-wiring directory (zmq_server or etcd).")
    parser.add_argument("-d", "--directory", metavar="HOST[:PORT] | etcd://...",
                        default=os.environ.get("ZMQ_DIRECTORY", "127.0.0.1"),
                        help="the directory (default: $ZMQ_DIRECTORY, else 127.0.0.1; port 5682)")
    parser.add_argument("-k", "--directory-key", metavar="KEY", default=os.environ.get("ZMQ_DIRECTORY_KEY"),
                        help="the CURVE public key of a secure directory (default: $ZMQ_DIRECTORY_KEY)")
    parser.add_argument("-s", "--secret-key", metavar="FILE", default=os.environ.get("ZMQ_SECRET_KEY_FILE"),
                        help="a file holding this client's CURVE secret key (as zmq_keygen writes it), "
                        "for a directory with --curve-allow: its public key must be in the allow "
                        "list (default: $ZMQ_SECRET_KEY_FILE; without: a new key, which such a "
                        "directory refuses)")
    parser.add_argument("-t", "--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list the names matching a glob pattern")
    ls.add_argument("pattern", nargs="?", default="*")
    ls.add_argument("--json", action="store_true", help="print one JSON array")
    info = sub.add_parser("info", help="show one name's record and owner")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    watch = sub.add_parser("watch", help="print the names matching a pattern, then every change (Ctrl-C ends)")
    watch.add_argument("pattern", nargs="?", default="*")
    watch.add_argument("--json", action="store_true", help="print one JSON object per line: "
                       "the record with \"event\": present, added, removed or changed")
    sub.add_parser("ping", help="exit 0 if the directory answers, else 1")
    return parser.parse_args(argv)


def _hint(args, exc):
    """What to do, in this tool's options, when the directory could not be
    opened: the library's messages speak of ZMQ()'s arguments."""
    from pyzmq.directory import DirectoryError, DirectoryUnreachable
    from pyzmq.protocol import AUTH
    text = str(exc)
    if isinstance(exc, DirectoryUnreachable) and "does not resolve" not in text:
        return ("is zmq_server running there? give its address with -d HOST[:PORT] "
                "(or $ZMQ_DIRECTORY)")
    if args.directory_key is None and "directory_key" in text:
        return ("a directory started with --curve-secret needs its public key: -k KEY "
                "(or $ZMQ_DIRECTORY_KEY), e.g. -k \"$(cat directory.key.pub)\"")
    if isinstance(exc, DirectoryError) and exc.code == AUTH and "refused this client" in text:
        if args.secret_key is None:
            return ("give the secret key of a client in the directory's allow list: "
                    "-s FILE (or $ZMQ_SECRET_KEY_FILE), e.g. -s alice.key")
        return (f"the public key of {args.secret_key} is not in the directory's allow list "
                "(zmq_server --curve-allow)")
    return None


def main(argv=None):
    """Entry point of ``zmq_names``; returns the exit status."""
    args = parse_args(argv)
    from pyzmq.directory import DirectoryClient, DirectoryError, entry_dict
    from pyzmq.etcd_directory import EtcdDirectory, is_etcd_url
    from pyzmq.protocol import NOT_FOUND
    try:
        if is_etcd_url(args.directory):
            client = EtcdDirectory(args.directory, timeout=args.timeout, lease=False)     # it only reads
        else:
            secret = None
            if args.secret_key is not None:
                from pyzmq.curve import load_key
                secret = load_key(args.secret_key)
            from pyzmq.location import check_directory_host
            check_directory_host(args.directory)
            # no lease to read; `watch` takes one (a WATCH lives under a lease)
            client = DirectoryClient(args.directory, timeout=args.timeout,
                                     server_key=args.directory_key, secret_key=secret, lease=False)
    except (Error, ValueError, TypeError, OSError) as exc:
        print(f"zmq_names: {exc}", file=sys.stderr)
        hint = _hint(args, exc)
        if hint:
            print(f"zmq_names: {hint}", file=sys.stderr)
        return 1
    try:
        if args.command == "ping":
            client.ping()
            print(f"zmq_names: the directory at {client.address} answers")
        elif args.command == "ls":
            entries = [entry_dict(e) for e in client.list(args.pattern)]
            if args.json:
                print(json.dumps(entries, indent=1))
            else:
                for d in entries:
                    print(_row(d))
        elif args.command == "info":
            d = entry_dict(client.info(args.name))
            if args.json:
                print(json.dumps(d, indent=1))
            else:
                for field in ("name", "kind", "address", "key"):
                    print(f"{field}: {d[field] or '-'}")
                print(f"owner: pid {d['owner']['pid']} {d['owner']['program']} on {d['owner']['host']}")
                print(f"registered: {d['registered']}")
        else:
            with client.subscribe(args.pattern) as watch:
                # the first events are the snapshot's records, in name order
                for _ in range(watch.snapshot_size):
                    _event("present", entry_dict(watch.get()[1]), args.json)
                for kind, entry in watch:
                    _event(kind, entry_dict(entry), args.json)
    except KeyboardInterrupt:
        return 0
    except (DirectoryError, Error, ValueError) as exc:
        print(f"zmq_names: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, DirectoryError) and exc.code == NOT_FOUND else 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
