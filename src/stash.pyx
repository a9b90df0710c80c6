# The stash: messages a bind() read while it waited for its sync answer.
# (Included by _zmq.pyx: one extension module, one compilation unit.)

cdef class _Stash:
    """Messages a bind() read while it waited for its sync answer, as
    (queue id, bytes) in arrival order; receive() hands them out first.
    n is their count, so the fast path tests a C integer instead of asking
    the deque; only these methods change the deque, and each keeps n equal
    to its length."""

    def __cinit__(self):
        self.items = collections.deque()

    def __len__(self):
        return len(self.items)

    cdef int push(self, Py_ssize_t qid, bytes m) except -1:
        self.items.append((qid, m))
        self.n += 1
        return 0

    cdef tuple pop(self):
        """The oldest message (IndexError when there is none)."""
        cdef tuple item = self.items.popleft()
        self.n -= 1
        return item

    cdef int truncate(self, Py_ssize_t n) except -1:
        """Drop the newest messages until n are left."""
        while self.n > n:
            self.items.pop()
            self.n -= 1
        return 0

    cdef list take(self, Py_ssize_t qid):
        """Remove queue qid's messages; returns them (bytes) in order."""
        cdef list taken = [m for q, m in self.items if q == qid]
        if taken:
            self.items = collections.deque(item for item in self.items if item[0] != qid)
            self.n = len(self.items)
        return taken

