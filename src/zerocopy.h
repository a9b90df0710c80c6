/* Deferred release of Python objects lent to libzmq without a copy.
 *
 * When pyzmq-wiring sends a large immutable bytes object it hands libzmq a
 * pointer into the object instead of copying it.  libzmq tells us when it is
 * done from its own I/O thread, where we may not touch Python objects (no
 * GIL).  So the I/O thread only pushes the loan onto a lock-free stack, and
 * threads that hold the GIL take the whole stack and drop the references.
 */
#ifndef PYZMQ_WIRING_ZEROCOPY_H
#define PYZMQ_WIRING_ZEROCOPY_H

#include <Python.h>
#include <stdlib.h>

typedef struct zw_loan {
    struct zw_loan *next;
    PyObject *obj;
} zw_loan;

static zw_loan *zw_returned = NULL;   /* loans libzmq has given back */
static long zw_outstanding = 0;       /* loans not yet released (GIL-side count) */

/* libzmq's free function: runs in an I/O thread, never touches Python. */
static void zw_give_back(void *data, void *hint)
{
    zw_loan *loan = (zw_loan *)hint;
    (void)data;
    zw_loan *head = __atomic_load_n(&zw_returned, __ATOMIC_RELAXED);
    do {
        loan->next = head;
    } while (!__atomic_compare_exchange_n(&zw_returned, &head, loan, 1,
                                          __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/* Called with the GIL: a loan record that keeps obj alive. NULL if out of memory. */
static zw_loan *zw_lend(PyObject *obj)
{
    zw_loan *loan = (zw_loan *)malloc(sizeof(zw_loan));
    if (loan == NULL)
        return NULL;
    Py_INCREF(obj);
    loan->obj = obj;
    loan->next = NULL;
    zw_outstanding++;
    return loan;
}

/* Called with the GIL when libzmq refused the message: nothing was lent. */
static void zw_cancel(zw_loan *loan)
{
    Py_DECREF(loan->obj);
    zw_outstanding--;
    free(loan);
}

/* Called with the GIL: release every object libzmq has finished with. */
static long zw_collect(void)
{
    long n = 0;
    zw_loan *loan = __atomic_exchange_n(&zw_returned, NULL, __ATOMIC_ACQUIRE);
    while (loan != NULL) {
        zw_loan *next = loan->next;
        Py_DECREF(loan->obj);
        free(loan);
        loan = next;
        n++;
    }
    zw_outstanding -= n;
    return n;
}

#endif
