"""Request/reply across two processes, in notebook-sized steps.

A server process owns a global queue 'requests' and a global exchange
'replies'; the client binds to both and asks.  Run this file: it starts a
zmq_server (pyzmq.Directory) and the server process itself.

The server stays up until the client has closed its instance (it waits for
its stdin to close): a close() that finds the consumer of an exchange gone
logs a WARNING, since it cannot tell whether anything was still queued.
"""
import subprocess
import sys

import pyzmq

SERVER = """
import sys, pyzmq
with pyzmq.ZMQ(sys.argv[1]) as zmq:
    replies = zmq.create_exchange("replies", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    zmq.create_queue("requests", pyzmq.SCOPE_GLOBAL, "127.0.0.1:0")
    print("ready", flush=True)
    while (request := zmq.receive()) != b"bye":
        zmq.send(replies, request.upper())
    sys.stdin.read()        # until the client has closed: it still binds to 'requests'
"""


def main() -> None:
    with pyzmq.Directory() as directory:
        server = subprocess.Popen([sys.executable, "-c", SERVER, directory.address],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "ready"
            with pyzmq.ZMQ(directory.address) as zmq:
                ask = zmq.create_exchange("ask")
                zmq.create_queue("answers")
                zmq.bind("replies", "answers")
                zmq.bind("ask", "requests")
                for word in (b"hello", b"wiring"):
                    zmq.send(ask, word)
                    print(word.decode(), "->", zmq.receive(timeout=5).decode())
                zmq.send(ask, b"bye")
            # the `with` closed the client: 'bye' has left this process
            assert server.stdin is not None
            server.stdin.close()
            server.wait(10)
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
