/*
 * pyfloor: the least a Python program can do on pyzmq-wiring's latency
 * path, for perf/py_floor_lat.py (shape py-floor of perf/path_lat.py).
 *
 * The same sockets as wiring_lat's direct mode (one way PUSH -> PULL,
 * back XPUB with XPUB_NODROP -> SUB), driven from a Python loop through
 * three minimal functions: recv() blocks in zmq_msg_recv with the GIL
 * released and returns None, send() sends on what came (zmq_msg_send, no
 * copy; the remote's first message is a new one of the given size), with
 * the GIL held, as the extension's fast path does.  No argument parsing, no objects made, no
 * checks beyond the return codes: what is left between this and
 * wiring_lat is the interpreter (its loop, two calls, the GIL given up
 * and taken back per wait), which any Python binding pays; what is left
 * between pyzmq-wiring and this is the binding's own work.
 *
 * Built by perf/c/build.py (build_pyfloor) as a CPython extension module
 * for the interpreter that runs it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static void *ctx, *in, *out;
static zmq_msg_t msg;
static char *buf;
static size_t size, last;
static int local, sent;

static PyObject *zmq_error (const char *what)
{
    PyErr_Format (PyExc_OSError, "%s: %s", what, zmq_strerror (zmq_errno ()));
    return NULL;
}

/* open(role, pull_or_push_endpoint, xpub_or_sub_endpoint, size) */
static PyObject *pf_open (PyObject *self, PyObject *args)
{
    const char *role, *a, *b;
    Py_ssize_t n;
    int one = 1, zero = 0, inf = -1;
    (void) self;
    if (!PyArg_ParseTuple (args, "sssn", &role, &a, &b, &n))
        return NULL;
    if (ctx != NULL) {
        PyErr_SetString (PyExc_RuntimeError, "already open");
        return NULL;
    }
    local = strcmp (role, "local") == 0;
    size = (size_t) n;
    ctx = zmq_ctx_new ();
    if (ctx == NULL)
        return zmq_error ("zmq_ctx_new");
    in = zmq_socket (ctx, local ? ZMQ_PULL : ZMQ_SUB);
    out = zmq_socket (ctx, local ? ZMQ_XPUB : ZMQ_PUSH);
    if (in == NULL || out == NULL)
        return zmq_error ("zmq_socket");
    zmq_setsockopt (in, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (out, ZMQ_LINGER, &inf, sizeof inf);
    zmq_msg_init (&msg);
    if (local) {
        if (zmq_setsockopt (out, ZMQ_XPUB_NODROP, &one, sizeof one) != 0)
            return zmq_error ("XPUB_NODROP");
        if (zmq_bind (in, a) != 0 || zmq_bind (out, b) != 0)
            return zmq_error ("zmq_bind");
        /* the SUB's subscription: from then on what the XPUB sends arrives */
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = zmq_msg_recv (&msg, out, 0);
        Py_END_ALLOW_THREADS
        if (rc < 0)
            return zmq_error ("zmq_msg_recv(subscription)");
    } else {
        buf = calloc (1, size ? size : 1);
        if (buf == NULL)
            return PyErr_NoMemory ();
        if (zmq_setsockopt (in, ZMQ_SUBSCRIBE, "", 0) != 0)
            return zmq_error ("SUBSCRIBE");
        if (zmq_connect (in, b) != 0 || zmq_connect (out, a) != 0)
            return zmq_error ("zmq_connect");
    }
    Py_RETURN_NONE;
}

static PyObject *pf_recv (PyObject *self, PyObject *unused)
{
    int rc;
    (void) self;
    (void) unused;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        rc = zmq_msg_recv (&msg, in, 0);
        Py_END_ALLOW_THREADS
        if (rc >= 0) {
            last = zmq_msg_size (&msg);
            Py_RETURN_NONE;
        }
        if (zmq_errno () != EINTR)
            return zmq_error ("zmq_msg_recv");
        if (PyErr_CheckSignals () < 0)
            return NULL;
    }
}

static PyObject *pf_send (PyObject *self, PyObject *unused)
{
    int rc;
    (void) self;
    (void) unused;
    /* what came is sent on itself, no copy, as wiring_lat does; the
       remote's first message comes from buf */
    if (local)
        rc = zmq_msg_send (&msg, out, ZMQ_DONTWAIT);
    else if (!sent)
        rc = zmq_send (out, buf, size, 0);
    else
        rc = zmq_msg_send (&msg, out, 0);
    sent = 1;
    if (rc < 0)
        return zmq_error ("zmq_send");
    Py_RETURN_NONE;
}

/* the size of what came last, checked once at the end by the driver */
static PyObject *pf_last_size (PyObject *self, PyObject *unused)
{
    (void) self;
    (void) unused;
    return PyLong_FromSize_t (last);
}

static PyObject *pf_close (PyObject *self, PyObject *unused)
{
    (void) self;
    (void) unused;
    if (ctx == NULL)
        Py_RETURN_NONE;
    zmq_msg_close (&msg);
    zmq_close (in);
    zmq_close (out);
    Py_BEGIN_ALLOW_THREADS
    zmq_ctx_term (ctx);
    Py_END_ALLOW_THREADS
    ctx = in = out = NULL;
    free (buf);
    buf = NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"open", pf_open, METH_VARARGS, "open(role, endpoint_a, endpoint_b, size)"},
    {"recv", pf_recv, METH_NOARGS, "block for the next message (GIL released)"},
    {"send", pf_send, METH_NOARGS, "send the echo (local) or a new message (remote)"},
    {"last_size", pf_last_size, METH_NOARGS, "size of the last message received"},
    {"close", pf_close, METH_NOARGS, "close the sockets and the context"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pyfloor",
    "The least a Python loop can do on pyzmq-wiring's latency path.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_pyfloor (void)
{
    return PyModule_Create (&module);
}
