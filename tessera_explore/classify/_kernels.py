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

__all__ = ["run", "warm", "inv_norms", "dot_scores", "max_scores", "linear_classify", "knn_classify", "code_norms",
           "knn_merge", "knn_vote"]

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
    Votes are summed in float64: the float32 weights of k <= 512 neighbours add up
    exactly there, so the vote does not depend on the order the k best were found in
    (:mod:`~tessera_explore.classify.incremental` derives the same votes from its own
    neighbour lists).  Equal votes go to the lower class index.

    Ties in similarity keep the earlier training pixel; :func:`predict_map` passes the
    training pixels ordered by class, which makes "the class that sorts first wins a
    tie" the rule (independent of the order the samples were given in).

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
        votes = np.empty(n_classes, np.float64)
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
            tot = 0.0
            for p in range(filled):
                w = np.float32(1.0)
                if weighted:
                    w = max(top_s[p] * inv_i, np.float32(0.0)) + np.float32(1e-6)
                votes[t_cls[top_j[p]]] += np.float64(w)
                tot += np.float64(w)
            best = 0
            for c in range(n_classes):
                if votes[c] > votes[best]:
                    best = c
            out_cls[i] = best
            out_conf[i] = np.float32(votes[best] / tot)
            if want_prob:
                for c in range(n_classes):
                    out_prob[c, i] = np.float32(votes[c] / tot)


# --- exact incremental kNN (tessera_explore.classify.incremental) -----------------------
# Each held pixel keeps its K best training samples, best first, by the key
# (similarity desc, class rank asc, sample id asc); the similarity is the one
# knn_classify ranks by (``float32(codes . T_j) * t_inv_j``, without the pixel's norm),
# so the k best of the full path are the first k of the list.


@njit(parallel=True, cache=True)
def code_norms(codes, pix, out):  # pragma: no cover - compiled
    """``out[q] = |codes[pix[q]]|`` as float32, rounded as :func:`knn_classify` rounds it."""
    for q in prange(pix.shape[0]):
        i = pix[q]
        acc = np.int32(0)
        for d in range(codes.shape[1]):
            c = np.int32(codes[i, d])
            acc += c * c
        out[q] = np.float32(np.sqrt(np.float64(acc)))


@njit(parallel=True, cache=True)
def knn_merge(codes, pix, loc, T, t_inv, t_id, rank_of_id, top_s, top_id, top_n, changed):  # pragma: no cover
    """Merge training samples ``T`` (int16 ``(m, bands)``, inverse norms ``t_inv``, ids
    ``t_id``) into the best-first neighbour lists of the held pixels ``loc`` (indices into
    ``pix``, the pixels' flat indices into ``codes``).

    ``top_s``/``top_id`` ``(P, K)`` hold each pixel's K best (similarity, sample id),
    ``top_n`` how many are filled; ``rank_of_id[id]`` is the rank of the sample's class
    among the class names (sorted), which breaks ties in similarity.  ``changed[i]`` is
    set to 1 where a list changed.  Work is ``len(loc) * m`` dot products: the samples
    already held are not looked at.
    """
    nl = loc.shape[0]
    m = T.shape[0]
    nb = codes.shape[1]
    K = top_s.shape[1]
    nblk = (nl + _CHUNK - 1) // _CHUNK
    for blk in prange(nblk):
        row = np.empty(nb, np.int16)
        sc = np.empty(m, np.int32)
        for q in range(blk * _CHUNK, min(nl, blk * _CHUNK + _CHUNK)):
            i = loc[q]
            p = pix[i]
            for d in range(nb):
                row[d] = codes[p, d]
            for j in range(m):
                acc = np.int32(0)
                for d in range(nb):
                    acc += np.int32(row[d] * T[j, d])
                sc[j] = acc
            cnt = top_n[i]
            for j in range(m):
                s = np.float32(sc[j]) * t_inv[j]
                sid = t_id[j]
                r = rank_of_id[sid]
                if cnt == K:
                    ls = top_s[i, K - 1]
                    lid = top_id[i, K - 1]
                    lr = rank_of_id[lid]
                    if not (s > ls or (s == ls and (r < lr or (r == lr and sid < lid)))):
                        continue
                    pos = K - 1
                else:
                    pos = cnt
                    cnt += 1
                while pos > 0:
                    ps = top_s[i, pos - 1]
                    pid = top_id[i, pos - 1]
                    pr = rank_of_id[pid]
                    if s > ps or (s == ps and (r < pr or (r == pr and sid < pid))):
                        top_s[i, pos] = ps
                        top_id[i, pos] = pid
                        pos -= 1
                    else:
                        break
                top_s[i, pos] = s
                top_id[i, pos] = sid
                changed[i] = 1
            top_n[i] = cnt


@njit(parallel=True, cache=True)
def knn_vote(loc, top_s, top_id, top_n, cls_of_id, norm, valid, k, n_classes, weighted,  # pragma: no cover
             out_cls, out_conf):
    """The vote of :func:`knn_classify` from held neighbour lists, for the pixels ``loc``:
    the first ``k`` of each list, weights and float64 sums as there; class 255 and NaN
    where not valid."""
    n = loc.shape[0]
    nblk = (n + _CHUNK - 1) // _CHUNK
    for blk in prange(nblk):
        votes = np.empty(n_classes, np.float64)
        for q in range(blk * _CHUNK, min(n, blk * _CHUNK + _CHUNK)):
            i = loc[q]
            if not valid[i] or top_n[i] == 0:
                out_cls[i] = 255
                out_conf[i] = np.float32(np.nan)
                continue
            norm_i = norm[i]
            inv_i = np.float32(1.0) / norm_i if norm_i > 0 else np.float32(0.0)
            for c in range(n_classes):
                votes[c] = 0.0
            tot = 0.0
            for p in range(min(k, top_n[i])):
                w = np.float32(1.0)
                if weighted:
                    w = max(top_s[i, p] * inv_i, np.float32(0.0)) + np.float32(1e-6)
                votes[cls_of_id[top_id[i, p]]] += np.float64(w)
                tot += np.float64(w)
            best = 0
            for c in range(n_classes):
                if votes[c] > votes[best]:
                    best = c
            out_cls[i] = best
            out_conf[i] = np.float32(votes[best] / tot)


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
        pix = np.arange(3, dtype=np.int64)
        code_norms(c, pix, o)
        top_s, top_id, top_n = np.empty((3, 2), np.float32), np.empty((3, 2), np.int32), np.zeros(3, np.int32)
        knn_merge(c, pix, pix, np.ones((2, 128), np.int16), np.ones(2, np.float32), np.arange(2, dtype=np.int32),
                  np.zeros(2, np.int32), top_s, top_id, top_n, np.zeros(3, np.uint8))
        knn_vote(pix, top_s, top_id, top_n, np.zeros(2, np.int32), o, v, 1, 2, True, cls, o)
        _WARM = True
