#!/usr/bin/env python3
"""Reference speeds on the exported models and the parity rows: onnxruntime and XGBoost's own
predictor, per row (batch 1) and batched (1,000 rows), and XGBoost's pred_contribs per row.
Single thread, like the host's engine. Compare with `cargo bench -p edgepm --bench models`.
    python models/bench.py"""
import json, time
from pathlib import Path
import numpy as np, pandas as pd, onnxruntime as ort, xgboost as xgb

FIX = Path(__file__).resolve().parent.parent / "host" / "tests" / "fixtures" / "models"


def per_call(fn, n, reps=3):
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def main():
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
    out = {}
    for name in ["bearing-xgb", "ai4i-xgb", "bearing-mlp"]:
        d = FIX / name
        df = pd.read_csv(d / "parity.csv")
        X = df[[c for c in df.columns if c[0] == "x" and c[1:].isdigit()]].to_numpy(np.float32)
        sess = ort.InferenceSession(str(d / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        r = {"onnxruntime_row_us": per_call(lambda i: sess.run(None, {"input": X[i:i + 1]}), 2000),
             "onnxruntime_batch_us_per_row": per_call(lambda i: sess.run(None, {"input": X}), 20) / len(X)}
        if (d / "model.json").exists():
            b = xgb.Booster(); b.load_model(str(d / "model.json")); b.set_param({"nthread": 1})
            r["xgboost_row_us"] = per_call(lambda i: b.inplace_predict(X[i:i + 1]), 2000)
            r["xgboost_batch_us_per_row"] = per_call(lambda i: b.inplace_predict(X), 20) / len(X)
            dm = [xgb.DMatrix(X[i:i + 1]) for i in range(200)]
            r["xgboost_pred_contribs_row_us"] = per_call(lambda i: b.predict(dm[i], pred_contribs=True), 200)
        out[name] = {k: round(v, 2) for k, v in r.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
