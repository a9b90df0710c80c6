/*
 * remote_thr <connect-endpoint> <message-size> <message-count>
 *
 * Throughput test, sending side: a PUSH socket connects to local_thr and
 * sends message-count messages of message-size bytes.  Prints nothing on
 * success; local_thr does the timing.
 *
 * Each message is a fresh zmq_msg_init_size buffer sent as is, as libzmq's
 * own remote_thr does: the payload is NOT written (no memset, no memcpy of
 * user data), so this is the upper bound of what the stack can move, not
 * what an application that produces its data can reach.  Build with
 * -DPERF_FILL (make PERF_FILL=1) to memset every message instead, which
 * adds the cost of touching each payload once.
 *
 * Linger is -1: zmq_ctx_term at the end waits until every queued message
 * has been written to the connection, so the process never exits with
 * messages still queued.  (If local_thr dies mid-test, remote_thr waits
 * forever; the caller has to kill it.)
 */
#include "perf.h"

int main (int argc, char **argv)
{
    struct perf_args args;
    perf_parse_args ("remote_thr", "connect-endpoint", "message-count", argc,
                     argv, &args);

    void *ctx = zmq_ctx_new ();
    if (!ctx)
        perf_fail_zmq ("zmq_ctx_new");
    void *sock = zmq_socket (ctx, ZMQ_PUSH);
    if (!sock)
        perf_fail_zmq ("zmq_socket(ZMQ_PUSH)");
    perf_set_linger (sock, -1);
    perf_connect (sock, args.endpoint);

    zmq_msg_t msg;
    for (uint64_t i = 0; i < args.count; i++) {
        if (zmq_msg_init_size (&msg, args.size) != 0)
            perf_fail_zmq ("zmq_msg_init_size");
#ifdef PERF_FILL
        if (args.size)
            memset (zmq_msg_data (&msg), 'x', args.size);
#endif
        if (zmq_msg_send (&msg, sock, 0) < 0)
            perf_fail_zmq ("zmq_msg_send");
        /* After a successful send msg is empty; closing it is a no-op kept
           for symmetry with init. */
        zmq_msg_close (&msg);
    }

    perf_close (sock, ctx);
    return 0;
}
