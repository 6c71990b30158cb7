"""Train the two versions of the `classifier` model offline and write their weights.

Run once by hand (needs scikit-learn, which is not a dependency of the gateway):
    python deploy/training/train_classifier.py

Both versions are multinomial logistic regressions over scikit-learn's bundled 8x8 digits.
Version 1 sees the whole training split with mild regularization; version 2 sees only a fifth
of it with strong regularization, so the two disagree on a minority of inputs. The script also
writes `deploy/digits_sample.npz`: held-out digits the tests and demo send, with the labels.
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

DEPLOY = Path(__file__).resolve().parent.parent
MODEL_DIR = DEPLOY / "models" / "classifier"
SAMPLE_SIZE = 300


def train(features: np.ndarray, labels: np.ndarray, c: float) -> LogisticRegression:
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(features, labels)
    return model


def main() -> None:
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=SAMPLE_SIZE, random_state=0, stratify=digits.target
    )
    versions = {
        "1": train(x_train, y_train, c=1.0),
        "2": train(x_train[: len(x_train) // 5], y_train[: len(y_train) // 5], c=0.0005),
    }
    predictions = {}
    for version, model in versions.items():
        np.savez_compressed(
            MODEL_DIR / version / "weights.npz",
            coef=model.coef_.T.astype(np.float32),
            intercept=model.intercept_.astype(np.float32),
        )
        logits = x_test.astype(np.float32) @ model.coef_.T.astype(np.float32) + model.intercept_
        predictions[version] = logits.argmax(axis=1)
        accuracy = float((predictions[version] == y_test).mean())
        print(f"version {version}: accuracy {accuracy:.3f} on {len(y_test)} held-out digits")
    disagreement = float((predictions["1"] != predictions["2"]).mean())
    print(f"versions disagree on {disagreement:.1%} of the held-out digits")
    np.savez_compressed(
        DEPLOY / "digits_sample.npz",
        pixels=x_test.astype(np.uint8),
        labels=y_test.astype(np.uint8),
        class_v1=predictions["1"].astype(np.uint8),
        class_v2=predictions["2"].astype(np.uint8),
    )


if __name__ == "__main__":
    main()
