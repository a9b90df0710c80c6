/*
 * local_lat <bind-endpoint> <message-size> <roundtrip-count>
 *
 * Latency test, passive side: a REP socket bound to the endpoint receives
 * each request, checks its size and sends the very same message back
 * (zero copy: the received zmq_msg_t is sent as is).  Prints nothing on
 * success; remote_lat does the timing.
 */
#include "perf.h"

int main (int argc, char **argv)
{
    struct perf_args args;
    perf_parse_args ("local_lat", "bind-endpoint", "roundtrip-count", argc,
                     argv, &args);

    void *ctx = zmq_ctx_new ();
    if (!ctx)
        perf_fail_zmq ("zmq_ctx_new");
    void *sock = zmq_socket (ctx, ZMQ_REP);
    if (!sock)
        perf_fail_zmq ("zmq_socket(ZMQ_REP)");
    /* Keep the last reply until it is delivered before closing. */
    perf_set_linger (sock, -1);
    perf_bind (sock, args.endpoint);

    zmq_msg_t msg;
    if (zmq_msg_init (&msg) != 0)
        perf_fail_zmq ("zmq_msg_init");
    for (uint64_t i = 0; i < args.count; i++) {
        if (zmq_msg_recv (&msg, sock, 0) < 0)
            perf_fail_zmq ("zmq_msg_recv");
        perf_check_size (zmq_msg_size (&msg), args.size, i);
        /* On success zmq_msg_send leaves msg empty, ready for the next
           receive. */
        if (zmq_msg_send (&msg, sock, 0) < 0)
            perf_fail_zmq ("zmq_msg_send");
    }
    zmq_msg_close (&msg);

    perf_close (sock, ctx);
    return 0;
}
