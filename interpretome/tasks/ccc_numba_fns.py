"""The numba kernels of all-pairs CCC (sgkit's ``*_numba_fns.py`` idea): compiled code, no dask, no xarray.

``tasks.ccc`` holds the graph (partition tasks, tile tasks, condensing) and calls ``tile_kernel``
once per tile of feature pairs. The kernels live beside it, in the tasks layer, because they
are what CCC computes (ccc-coef's ARI, evaluated exactly in int64), not how or where work runs;
keeping them in their own module keeps the graph code importable and readable without numba's
compile-time concerns (``cache=True``: compiled once per machine into numba's cache).

* ``ari`` — ccc-coef's adjusted Rand index from sum(n_cl^2), the squared cluster-size sums of both
  partitions and n (int64 when ``exact``, float64 otherwise);
* ``pair_ccc`` — the CCC of one feature pair: one walk over i's sorted order counting j's labels
  of every partition, snapshots at i's cluster boundaries, the best ARI of all partition pairs;
* ``tile_kernel`` — every pair of a tile and how many sample permutations reach each value.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def ari(ss, sqa, sqb, n, exact):
    """ccc-coef's ARI from sum(n_cl^2), the squared cluster-size sums of both partitions and n."""
    if exact:
        tp = ss - n
        fp = sqb - ss
        fn = sqa - ss
        tn = n * n - fp - fn - ss
        if fn == 0 and fp == 0:
            return 1.0
        num = tp * tn - fn * fp
        den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
        return (2.0 * np.float64(num)) / np.float64(den)
    ssf = np.float64(ss)
    nf = np.float64(n)
    tpf = ssf - nf
    fpf = np.float64(sqb) - ssf
    fnf = np.float64(sqa) - ssf
    tnf = nf * nf - fpf - fnf - ssf
    if fnf == 0.0 and fpf == 0.0:
        return 1.0
    return 2.0 * (tpf * tnf - fnf * fpf) / ((tpf + fnf) * (fnf + tnf) + (tpf + fpf) * (fpf + tnf))


@njit(cache=True, nogil=True)
def pair_ccc(oi, bi, segi, nsegi, sqi, vali, labj, sqj, valj, nlabj, perm, use_perm, cum, snap, n, exact):
    """CCC of feature i (sorted order ``oi``, boundaries ``bi``) vs feature j (labels ``labj``)."""
    k = labj.shape[1]
    cum[:, :] = 0
    m = 0
    nb = bi.shape[0]
    for t in range(n):
        while m < nb and bi[m] == t:
            snap[m, :, :] = cum
            m += 1
        obj = oi[t]
        if use_perm:
            obj = perm[obj]
        for b in range(k):
            if valj[b]:
                cum[b, labj[obj, b]] += 1
    while m < nb and bi[m] == n:
        snap[m, :, :] = cum
        m += 1
    best = 0.0
    for a in range(k):
        if not vali[a]:
            continue
        for b in range(k):
            if not valj[b]:
                continue
            ss = np.int64(0)
            nl = nlabj[b]
            for s in range(nsegi[a] - 1):
                s0 = segi[a, s]
                s1 = segi[a, s + 1]
                for lab in range(nl):
                    d = np.int64(snap[s1, b, lab] - snap[s0, b, lab])
                    ss += d * d
            v = ari(ss, sqi[a], sqj[b], np.int64(n), exact)
            if v > best:
                best = v
    return best


@njit(cache=True, nogil=True)
def tile_kernel(order_i, bounds_i, seg_i, nseg_i, sq_i, valid_i, ok_i,
                 labels_j, sq_j, valid_j, ok_j, nlab_j, diag, perms, exact):
    """Return (2, Fi, Fj) float64: the CCC of each pair of the tile and how many permutations reach it."""
    fi = order_i.shape[0]
    fj = labels_j.shape[0]
    n = order_i.shape[1]
    k = labels_j.shape[2]
    lmax = 1
    for j in range(fj):
        for b in range(k):
            if nlab_j[j, b] > lmax:
                lmax = nlab_j[j, b]
    np_ = perms.shape[0]
    out = np.full((2, fi, fj), np.nan)
    cum = np.zeros((k, lmax), np.int32)
    snap = np.zeros((bounds_i.shape[1], k, lmax), np.int32)
    dummy = np.zeros(1, np.int64)
    for i in range(fi):
        if not ok_i[i]:
            continue
        nb = 0
        while nb < bounds_i.shape[1] and bounds_i[i, nb] >= 0:
            nb += 1
        bi = bounds_i[i, :nb]
        j0 = i + 1 if diag else 0
        for j in range(j0, fj):
            if not ok_j[j]:
                continue
            obs = pair_ccc(order_i[i], bi, seg_i[i], nseg_i[i], sq_i[i], valid_i[i], labels_j[j],
                        sq_j[j], valid_j[j], nlab_j[j], dummy, False, cum, snap, n, exact)
            out[0, i, j] = obs
            hits = 0
            for p in range(np_):
                if pair_ccc(order_i[i], bi, seg_i[i], nseg_i[i], sq_i[i], valid_i[i], labels_j[j],
                         sq_j[j], valid_j[j], nlab_j[j], perms[p], True, cum, snap, n, exact) >= obs:
                    hits += 1
            out[1, i, j] = hits
    return out
