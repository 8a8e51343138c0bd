"""Reed-Solomon erasure coding (zfec): m shares of a blob, any k of which rebuild it.

zfec's own easyfec wrapper formats debug strings on every call; this is the same padding
(zeros to a multiple of k, cut off again on decode) without that.
"""
import zfec


def encode(data, k, m):
    """The m shares of data; shares 0..k-1 are data itself in k pieces (views of it where
    no padding is needed)."""
    n = -(-len(data) // k)
    mv = memoryview(data)
    blocks = [mv[i * n:(i + 1) * n] for i in range(k)]
    blocks = [b if len(b) == n else bytes(b) + bytes(n - len(b)) for b in blocks]
    return zfec.Encoder(k, m).encode(blocks)


def decode(good, size, k, m):
    """The size bytes of data from {share index: body} holding at least k shares."""
    nums = sorted(good)[:k]
    return b"".join(zfec.Decoder(k, m).decode([good[j] for j in nums], nums))[:size]
