/*
 * remote_lat <connect-endpoint> <message-size> <roundtrip-count>
 *
 * Latency test, active side: a REQ socket connects to local_lat, sends one
 * message of message-size bytes and waits for it to come back,
 * roundtrip-count times.  Prints the average one-way latency, i.e. half the
 * average round trip.
 *
 * The clock starts only once the connection is up: a socket monitor
 * reports ZMQ_EVENT_HANDSHAKE_SUCCEEDED when the TCP connection and the ZMTP
 * handshake are complete, and the timed loop begins after that event.
 * Connection setup (and the up-to-100 ms reconnect delay when remote_lat
 * starts before local_lat has bound) therefore never counts as latency.
 *
 * Not ZMQ_IMMEDIATE for that wait: on a connecting socket with
 * ZMQ_IMMEDIATE, libzmq tears down the pipe when the peer disconnects, and
 * REQ then discards a reply it has not read yet.  local_lat closes right
 * after sending its last reply, so the last reply was lost in a few percent
 * of runs and remote_lat waited forever.
 */
#include "perf.h"

/* Block until the monitor reports ZMQ_EVENT_HANDSHAKE_SUCCEEDED.  A monitor
   event is two frames: 6 bytes (16-bit event id, 32-bit value) and the
   endpoint. */
static void wait_handshake (void *monitor)
{
    for (;;) {
        zmq_msg_t frame;
        uint16_t event = 0;
        int more;
        zmq_msg_init (&frame);
        if (zmq_msg_recv (&frame, monitor, 0) < 0) {
            if (errno == EINTR)
                continue;
            perf_fail_zmq ("zmq_msg_recv(monitor)");
        }
        if (zmq_msg_size (&frame) >= sizeof event)
            memcpy (&event, zmq_msg_data (&frame), sizeof event);
        more = zmq_msg_more (&frame);
        zmq_msg_close (&frame);
        while (more) { /* skip the endpoint frame */
            zmq_msg_init (&frame);
            if (zmq_msg_recv (&frame, monitor, 0) < 0) {
                if (errno == EINTR)
                    continue;
                perf_fail_zmq ("zmq_msg_recv(monitor)");
            }
            more = zmq_msg_more (&frame);
            zmq_msg_close (&frame);
        }
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            return;
    }
}

int main (int argc, char **argv)
{
    struct perf_args args;
    perf_parse_args ("remote_lat", "connect-endpoint", "roundtrip-count",
                     argc, argv, &args);

    void *ctx = zmq_ctx_new ();
    if (!ctx)
        perf_fail_zmq ("zmq_ctx_new");
    void *sock = zmq_socket (ctx, ZMQ_REQ);
    if (!sock)
        perf_fail_zmq ("zmq_socket(ZMQ_REQ)");
    perf_set_linger (sock, -1);

    /* Monitor before connecting so that the handshake event cannot be
       missed; the PAIR end is connected first for the same reason (events
       are dropped while nobody listens). */
    const char *monitor_ep = "inproc://remote_lat.monitor";
    if (zmq_socket_monitor (sock, monitor_ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        != 0)
        perf_fail_zmq ("zmq_socket_monitor");
    void *monitor = zmq_socket (ctx, ZMQ_PAIR);
    if (!monitor)
        perf_fail_zmq ("zmq_socket(ZMQ_PAIR)");
    if (zmq_connect (monitor, monitor_ep) != 0)
        perf_fail_zmq ("zmq_connect(monitor)");
    perf_connect (sock, args.endpoint);
    wait_handshake (monitor);
    if (zmq_socket_monitor (sock, NULL, 0) != 0)
        perf_fail_zmq ("zmq_socket_monitor(stop)");
    if (zmq_close (monitor) != 0)
        perf_fail_zmq ("zmq_close(monitor)");

    /* One message travels back and forth: after each receive msg holds the
       reply, which is sent again as the next request.  Its content is set
       once (zeros) outside the timed loop. */
    zmq_msg_t msg;
    if (zmq_msg_init_size (&msg, args.size) != 0)
        perf_fail_zmq ("zmq_msg_init_size");
    if (args.size)
        memset (zmq_msg_data (&msg), 0, args.size);

    uint64_t start = perf_now_ns ();
    for (uint64_t i = 0; i < args.count; i++) {
        if (zmq_msg_send (&msg, sock, 0) < 0)
            perf_fail_zmq ("zmq_msg_send");
        if (zmq_msg_recv (&msg, sock, 0) < 0)
            perf_fail_zmq ("zmq_msg_recv");
        perf_check_size (zmq_msg_size (&msg), args.size, i);
    }
    uint64_t elapsed = perf_now_ns () - start;
    zmq_msg_close (&msg);

    perf_close (sock, ctx);
    perf_print_lat (args.size, args.count, elapsed);
    return 0;
}
