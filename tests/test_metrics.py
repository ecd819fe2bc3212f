import numpy as np

from export.metrics import gauc


def test_gauc_weights_users_by_impressions_and_skips_one_label_users():
    users = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.7, 0.5, 0.5])
    # user 0: AUC 0.75 over 4 impressions, user 1: AUC 0 over 2, user 2 has one label only
    assert abs(gauc(users, labels, scores) - (0.75 * 4 + 0.0 * 2) / 6) < 1e-12
