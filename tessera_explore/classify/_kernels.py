"""Numba kernels over int8 codes, pixel-major ``(n, bands)`` (128, or a nested-depth prefix).

Cosine similarity needs no scale: ``cos(s_i c_i, s_j c_j) = cos(c_i, c_j)``, so the
kernels work on the int8 codes of the tiles and on per-pixel inverse code norms.
Every kernel is ``parallel=True`` over pixels and ``cache=True``; :func:`warm` compiles
(or loads from the cache) all of them on tiny inputs, so that the first real call is
not the one that pays for compilation.

numba's default threading layer may not be entered by two threads at once, so callers
go through :func:`run`, which holds one lock.
"""

from __future__ import annotations

import threading

import numpy as np
from numba import njit, prange

__all__ = ["run", "warm", "inv_norms", "dot_scores", "max_scores", "linear_classify", "knn_classify"]

_LOCK = threading.Lock()
_WARM = False
_CHUNK = 256  # pixels per parallel work item


def run(kernel, *args):
    """Call a kernel under the module lock (numba's workqueue layer is not re-entrant)."""
    with _LOCK:
        return kernel(*args)


@njit(parallel=True, cache=True)
def inv_norms(codes, valid, out):  # pragma: no cover - compiled
    """``out[i] = 1 / |codes[i]|`` for valid pixels with a non-zero code, else 0."""
    n = codes.shape[0]
    for i in prange(n):
        acc = np.int32(0)
        if valid[i]:
            for d in range(codes.shape[1]):
                c = np.int32(codes[i, d])
                acc += c * c
        out[i] = np.float32(1.0 / np.sqrt(np.float64(acc))) if acc > 0 else np.float32(0.0)


@njit(parallel=True, cache=True, fastmath=True)
def dot_scores(codes, mult, q, bias, valid, out):  # pragma: no cover - compiled
    """``out[i] = mult[i] * (codes[i] . q) + bias`` (float32), NaN where not valid."""
    n = codes.shape[0]
    for i in prange(n):
        if valid[i]:
            acc = np.float32(0.0)
            for d in range(codes.shape[1]):
                acc += np.float32(codes[i, d]) * q[d]
            out[i] = mult[i] * acc + bias
        else:
            out[i] = np.float32(np.nan)


@njit(parallel=True, cache=True, fastmath=True)
def max_scores(codes, mult, Q, valid, out):  # pragma: no cover - compiled
    """``out[i] = max_j mult[i] * (codes[i] . Q[j])``, NaN where not valid."""
    n = codes.shape[0]
    m = Q.shape[0]
    for i in prange(n):
        if valid[i]:
            best = np.float32(-np.inf)
            for j in range(m):
                acc = np.float32(0.0)
                for d in range(codes.shape[1]):
                    acc += np.float32(codes[i, d]) * Q[j, d]
                v = mult[i] * acc
                if v > best:
                    best = v
            out[i] = best
        else:
            out[i] = np.float32(np.nan)


@njit(parallel=True, cache=True, fastmath=True)
def linear_classify(codes, mult, W, b, valid, softmax, out_cls, out_conf, out_prob, want_prob):  # pragma: no cover
    """Linear scores ``z_k = mult[i] * (codes[i] . W[k]) + b[k]``; class = argmax.

    With ``softmax`` the confidence is the softmax probability of the winner (and
    ``out_prob[k, i]`` the probabilities when ``want_prob``); otherwise it is the
    winning score.  Invalid pixels get class 255 and NaN.
    """
    n = codes.shape[0]
    K = W.shape[0]
    nblk = (n + _CHUNK - 1) // _CHUNK
    for blk in prange(nblk):
        z = np.empty(K, np.float32)
        for i in range(blk * _CHUNK, min(n, blk * _CHUNK + _CHUNK)):
            if not valid[i]:
                out_cls[i] = 255
                out_conf[i] = np.float32(np.nan)
                if want_prob:
                    for k in range(K):
                        out_prob[k, i] = np.float32(np.nan)
                continue
            best = 0
            for k in range(K):
                acc = np.float32(0.0)
                for d in range(codes.shape[1]):
                    acc += np.float32(codes[i, d]) * W[k, d]
                z[k] = mult[i] * acc + b[k]
                if z[k] > z[best]:
                    best = k
            out_cls[i] = best
            if softmax:
                tot = np.float32(0.0)
                zmax = z[best]
                for k in range(K):
                    z[k] = np.exp(z[k] - zmax)
                    tot += z[k]
                out_conf[i] = np.float32(1.0) / tot
                if want_prob:
                    for k in range(K):
                        out_prob[k, i] = z[k] / tot
            else:
                out_conf[i] = z[best]


@njit(parallel=True, cache=True)
def knn_classify(codes, valid, T, t_inv, t_cls, n_classes, k, weighted,  # pragma: no cover
                 out_cls, out_conf, out_prob, want_prob, out_near, want_near):
    """Cosine k-nearest-neighbour vote of every pixel against training codes ``T``.

    ``T`` int16 ``(m, bands)`` (the training pixels' int8 codes widened: an int16 x int16
    product of int8 values cannot overflow, and the loop vectorises well), ``t_inv`` their
    inverse norms, ``t_cls`` their class indices.  The pixel's own norm does not change
    the ranking, so it is left out.  Votes are uniform, or weighted by cosine similarity
    (clipped at 0) when ``weighted``; the confidence is the winner's share of the votes.

    With ``want_near``, ``out_near[i]`` is the cosine similarity to the nearest training
    pixel (``max_j cos``; NaN where not valid), taken from the same dot products, so the
    novelty of :func:`trust` costs no second pass over the codes.
    """
    n = codes.shape[0]
    m = T.shape[0]
    nb = codes.shape[1]
    nblk = (n + _CHUNK - 1) // _CHUNK
    for blk in prange(nblk):
        row = np.empty(nb, np.int16)
        sc = np.empty(m, np.int32)
        sf = np.empty(m, np.float32)
        cand = np.empty(m, np.int64)
        prev_kth = np.float32(-2.0)
        top_s = np.empty(k, np.float32)
        top_j = np.empty(k, np.int64)
        votes = np.empty(n_classes, np.float32)
        for i in range(blk * _CHUNK, min(n, blk * _CHUNK + _CHUNK)):
            if not valid[i]:
                out_cls[i] = 255
                out_conf[i] = np.float32(np.nan)
                if want_prob:
                    for c in range(n_classes):
                        out_prob[c, i] = np.float32(np.nan)
                if want_near:
                    out_near[i] = np.float32(np.nan)
                continue
            for d in range(nb):
                row[d] = codes[i, d]
            # all dot products first, kept as int32: this loop vectorises (int16 x int16 -> int32);
            # scaling inside it halves the speed
            for j in range(m):
                acc = np.int32(0)
                for d in range(nb):
                    acc += np.int32(row[d] * T[j, d])
                sc[j] = acc
            # then the k best (unordered: the vote needs no order).  Neighbouring pixels
            # are alike, so the previous pixel's k-th best cosine (less a margin) makes a
            # threshold: when at least k training pixels pass it, the k best are among
            # them (exact); otherwise every training pixel is a candidate.
            acc2 = np.int32(0)
            for d in range(nb):
                acc2 += np.int32(row[d] * row[d])
            norm_i = np.float32(np.sqrt(np.float64(acc2)))
            for j in range(m):
                sf[j] = np.float32(sc[j]) * t_inv[j]
            if want_near:
                best_s = np.float32(-2.0)
                for j in range(m):
                    if sf[j] > best_s:
                        best_s = sf[j]
                # the pixel's inverse norm as inv_norms computes it
                inv_n = np.float32(1.0 / np.sqrt(np.float64(acc2))) if acc2 > 0 else np.float32(0.0)
                out_near[i] = best_s * inv_n
            thr = (prev_kth - np.float32(0.05)) * norm_i
            cnt = 0
            for j in range(m):
                cand[cnt] = j
                cnt += sf[j] >= thr
            if cnt < k:
                for j in range(m):
                    cand[j] = j
                cnt = m
            # among the candidates: replace the weakest of the current k when a better
            # one comes; ties keep the earlier training pixel, as a stable sort would
            for p in range(k):
                top_s[p] = sf[cand[p]]
                top_j[p] = cand[p]
            mn = 0
            for p in range(1, k):
                if top_s[p] <= top_s[mn]:
                    mn = p
            kth = top_s[mn]
            for q in range(k, cnt):
                j = cand[q]
                s = sf[j]
                if s > kth:
                    top_s[mn] = s
                    top_j[mn] = j
                    mn = 0
                    for p in range(1, k):
                        if top_s[p] < top_s[mn] or (top_s[p] == top_s[mn] and top_j[p] > top_j[mn]):
                            mn = p
                    kth = top_s[mn]
            prev_kth = kth / norm_i if norm_i > 0 else np.float32(-2.0)
            filled = k
            inv_i = np.float32(1.0) / norm_i if norm_i > 0 else np.float32(0.0)
            for c in range(n_classes):
                votes[c] = 0.0
            tot = np.float32(0.0)
            for p in range(filled):
                w = np.float32(1.0)
                if weighted:
                    w = max(top_s[p] * inv_i, np.float32(0.0)) + np.float32(1e-6)
                votes[t_cls[top_j[p]]] += w
                tot += w
            best = 0
            for c in range(n_classes):
                if votes[c] > votes[best]:
                    best = c
            out_cls[i] = best
            out_conf[i] = votes[best] / tot
            if want_prob:
                for c in range(n_classes):
                    out_prob[c, i] = votes[c] / tot


def warm() -> None:
    """Compile (or load from numba's cache) every kernel on tiny inputs, once."""
    global _WARM
    if _WARM:
        return
    with _LOCK:
        if _WARM:
            return
        c = np.zeros((3, 128), np.int8)
        c[:, 0] = 1
        v = np.ones(3, np.bool_)
        f = np.ones(3, np.float32)
        o = np.empty(3, np.float32)
        inv_norms(c, v, o)
        dot_scores(c, f, np.ones(128, np.float32), np.float32(0), v, o)
        max_scores(c, f, np.ones((2, 128), np.float32), v, o)
        cls = np.empty(3, np.uint8)
        prob = np.empty((2, 3), np.float32)
        linear_classify(c, f, np.ones((2, 128), np.float32), np.zeros(2, np.float32), v, True, cls, o, prob, True)
        knn_classify(c, v, np.ones((2, 128), np.int16), np.ones(2, np.float32), np.zeros(2, np.int64), 2, 1, False,
                     cls, o, prob, True, np.empty(3, np.float32), True)
        _WARM = True
