"""Ridge probe of each view's age signal: how much of the age a linear model on pixels finds.

    python experiments/phantom/ridge_probe.py --subjects 1500 --out probe.json

Each view is block-averaged to 128 x 32 (8 x 8 px blocks), divided by its mean (exposure),
square-rooted (Poisson variance) and fed to a cross-validated ridge regression (5 folds,
alpha chosen inside each training fold). Reports the MAE for the anterior view, the posterior
view and both, against the MAE of always predicting the median age. A harder phantom shows as
a higher probe MAE.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bone_age.phantom.subject import render_subject, sample_subject


def features(img: np.ndarray) -> np.ndarray:
    small = img.reshape(128, 8, 32, 8).mean(axis=(1, 3))
    return np.sqrt(small / max(float(small.mean()), 1e-9)).ravel()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--subjects", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    t0 = time.perf_counter()
    ages, ant, post = [], [], []
    for i in range(args.subjects):
        s = sample_subject(args.seed, i)
        a, b, _, _ = render_subject(s)
        ages.append(s.age)
        ant.append(features(a.astype(np.float32)))
        post.append(features(b[:, ::-1].astype(np.float32)))  # back into the anterior frame
    y = np.array(ages, float)
    X = {"anterior": np.array(ant), "posterior": np.array(post)}
    X["both"] = np.hstack([X["anterior"], X["posterior"]])
    cv = KFold(5, shuffle=True, random_state=0)
    out = {"subjects": args.subjects, "seed": args.seed,
           "median_age_mae": float(np.mean(np.abs(y - np.median(y))))}  # fmt: skip
    for name, x in X.items():
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(0, 5, 11)))
        pred = cross_val_predict(model, x, y, cv=cv)
        out[f"{name}_mae"] = float(np.mean(np.abs(pred - y)))
        out[f"{name}_r2"] = float(1 - np.mean((pred - y) ** 2) / np.var(y))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
