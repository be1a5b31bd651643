"""SpRAy benchmark on synthetic pooled heatmaps (16x16) of one class with planted strategies:
70% a centred object, 20% the object plus a corner "watermark", 10% a shifted object.

For each N: wall time per stage and peak memory (each run in a fresh process), ARI against the
planted labels. "spray" is a first fit in a fresh process: above 20k samples per class its kNN graph
uses pynndescent, whose numba code compiles on first use in every process (about 45 s here);
"spray-warm" is a second fit in the same process, what every class after the first costs. Also
for scikit-learn's SpectralClustering(affinity="nearest_neighbors") and
for CoRelAy 1.0's SpectralClustering pipeline (its documented recipe: dense pairwise distances,
kNN affinity, 32 eigenvalues, k-means on the eigenvectors) where they finish within --limit.
Ratios are against spray measured in the same run. 2-D embeddings (t-SNE/UMAP) are not included.

    python benchmarks/bench_spray.py --sizes 20000 100000          # default
    python benchmarks/bench_spray.py --sizes 1000000 --only spray  # outside CI: about 15 min
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join("reports", "cache", "numba"))


def planted(n: int, seed: int = 0, size: int = 16, noise: float = 0.35):
    import numpy as np
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]

    def blob(cy, cx, s):
        return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s ** 2))
    truth = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    base = np.stack([blob(8, 8, 3), blob(8, 8, 3), blob(6, 10, 2.5)])
    maps = base[truth] * rng.uniform(0.8, 1.2, (n, 1, 1))
    maps[truth == 1, 12:15, 1:5] += 0.9
    maps += noise * rng.random((n, size, size)) * maps.mean()
    maps = maps / maps.sum((1, 2), keepdims=True)
    return maps.astype(np.float32), truth


def run_one(method: str, n: int) -> dict:
    import numpy as np
    from sklearn.metrics import adjusted_rand_score
    maps, truth = planted(n)
    start = time.perf_counter()
    stages = {}
    if method in ("spray", "spray-warm"):
        from spray.analysis import SpRAy

        def fit():
            model = SpRAy(pool=None, n_neighbors=10, pca=32 if n > 20000 else None, k_range=(2, 10), embeddings=())
            return model, model.fit(maps[:, None]).labels_
        if method == "spray-warm":  # a second fit in the same process: numba code already compiled
            fit()
            start = time.perf_counter()
        model, labels = fit()
        stages = {k: round(v, 2) for k, v in model.timings_.items() if k != "embed2d"}
        extra = {"k": int(model.k_), "solver": model.solver_, "knn": model.knn_method_}
    elif method == "sklearn":
        from sklearn.cluster import SpectralClustering
        labels = SpectralClustering(3, affinity="nearest_neighbors", n_neighbors=10, random_state=0,
                                    assign_labels="kmeans").fit_predict(maps.reshape(n, -1))
        extra = {"k": 3, "note": "k given"}
    else:
        from corelay.pipeline.spectral import SpectralClustering
        from corelay.processor.clustering import KMeans
        from corelay.processor.embedding import EigenDecomposition
        pipeline = SpectralClustering(embedding=EigenDecomposition(n_eigval=32), clustering=KMeans(n_clusters=3))
        labels = np.asarray(pipeline(maps.reshape(n, -1).astype(np.float64)))
        extra = {"k": 3, "note": "k given; k-means on all 32 eigenvectors"}
    seconds = time.perf_counter() - start
    return {"method": method, "n": n, "seconds": seconds, "stages": stages, "ari": adjusted_rand_score(truth, labels),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000])
    p.add_argument("--only", nargs="+", default=["spray", "spray-warm", "sklearn", "corelay"])
    p.add_argument("--limit", type=int, default=900, help="seconds before a baseline run is abandoned")
    p.add_argument("--child", nargs=2)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], int(args.child[1]))))
        return
    # compile pynndescent's numba code once, outside the timings
    subprocess.run([sys.executable, __file__, "--child", "spray", "30000"], capture_output=True)
    rows = []
    for n in args.sizes:
        for method in args.only:
            if method == "corelay" and n > 20000:
                rows.append({"method": method, "n": n, "skipped": "dense N x N distances (would need "
                             f"{n * n * 8 / 2 ** 30:.0f} GiB per matrix)"})
                continue
            try:
                out = subprocess.run([sys.executable, __file__, "--child", method, str(n)], capture_output=True,
                                     text=True, timeout=args.limit)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else
                            {"method": method, "n": n, "skipped": out.stderr.strip().splitlines()[-1][:100]})
            except subprocess.TimeoutExpired:
                rows.append({"method": method, "n": n, "skipped": f"did not finish in {args.limit} s"})
    print("SpRAy on planted strategies (70/20/10%), 16x16 maps, kNN k=10; one process per run")
    print(f"{'N':>8s} {'method':8s} {'seconds':>8s} {'x spray':>8s} {'peak MiB':>9s} {'ARI':>6s}  stages / note")
    spray = {r["n"]: r for r in rows if r["method"] == "spray" and "seconds" in r}
    for r in rows:
        if "skipped" in r:
            print(f"{r['n']:8d} {r['method']:8s} {'-':>8s} {'-':>8s} {'-':>9s} {'-':>6s}  {r['skipped']}")
            continue
        ratio = r["seconds"] / spray[r["n"]]["seconds"] if r["n"] in spray else float("nan")
        note = json.dumps(r["stages"]) + f" k={r['k']}" if r["stages"] else r.get("note", "")
        print(f"{r['n']:8d} {r['method']:8s} {r['seconds']:8.1f} {ratio:8.1f} {r['peak_mib']:9.0f} {r['ari']:6.3f}  {note}")


if __name__ == "__main__":
    main()
