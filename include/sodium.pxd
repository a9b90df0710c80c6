# Declarations of the parts of libsodium (sodium.h) that pyzmq-wiring uses:
# the public-key box (X25519 + XSalsa20-Poly1305) that also underlies
# libzmq's CURVE.  They secure the directory connection (src/_box.pyx).

cdef extern from "sodium.h" nogil:
    int sodium_init()

    enum:
        crypto_box_PUBLICKEYBYTES
        crypto_box_SECRETKEYBYTES
        crypto_box_BEFORENMBYTES
        crypto_box_NONCEBYTES
        crypto_box_MACBYTES

    int crypto_box_keypair(unsigned char *pk, unsigned char *sk)
    int crypto_scalarmult_base(unsigned char *q, const unsigned char *n)
    int crypto_box_beforenm(unsigned char *k, const unsigned char *pk,
                            const unsigned char *sk)
    int crypto_box_easy_afternm(unsigned char *c, const unsigned char *m,
                                unsigned long long mlen, const unsigned char *n,
                                const unsigned char *k)
    int crypto_box_open_easy_afternm(unsigned char *m, const unsigned char *c,
                                     unsigned long long clen, const unsigned char *n,
                                     const unsigned char *k)
    void sodium_memzero(void *pnt, size_t len)
