"""Test-time class-prior estimation: the EM re-estimation of Saerens, Latinne & Decaestecker,
"Adjusting the outputs of a classifier to new a priori probabilities" (Neural Computation, 2002).

A classifier trained under priors p_t(w) gives posteriors p_t(w|x). On an unlabeled test set with
unknown priors p(w), their eqs. (2.9)-(2.10) iterate, from p^(0)(w) = p_t(w):

    p^(s)(w|x_k) = [p^(s)(w) / p_t(w)] p_t(w|x_k) / sum_j [p^(s)(w_j) / p_t(w_j)] p_t(w_j|x_k)
    p^(s+1)(w)   = 1/N sum_k p^(s)(w|x_k)

until the priors stop changing; the last adjusted posteriors are the test-time predictions.

p_t must be the prior the posteriors fed to EM actually carry. A network trained with a square-root or
class-balanced sampler carries the sampler's prior, but calibration fit on a labeled split re-expresses
its posteriors under that split's class frequencies (the fitted class biases make the mean calibrated
posterior equal them). :func:`fit_prior_calibration` therefore first moves the log-posteriors from the
sampler's prior to the calibration split's frequencies (Bayes' rule), then fits the temperature (and
biases), and hands EM the prior the calibrated posteriors carry: their mean over the calibration split.
numpy only (the calibration fit imports torch when it runs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PriorEstimate:
    prior: np.ndarray  # the estimated test priors p(w), (C,)
    posteriors: np.ndarray  # the adjusted posteriors p(w|x_k), (N, C)
    iterations: int
    converged: bool


def adjust_posteriors(posteriors: np.ndarray, train_prior: np.ndarray, test_prior: np.ndarray) -> np.ndarray:
    """Bayes' rule for a change of priors: p(w|x) proportional to p_t(w|x) p(w) / p_t(w)."""
    weights = np.asarray(test_prior, np.float64) / np.clip(np.asarray(train_prior, np.float64), 1e-12, None)
    adjusted = np.asarray(posteriors, np.float64) * weights[None, :]
    return adjusted / np.clip(adjusted.sum(1, keepdims=True), 1e-300, None)


def rebase_log_posteriors(log_posteriors: np.ndarray, from_prior, to_prior) -> np.ndarray:
    """Bayes' rule in log space: log p(w|x) under ``to_prior`` of a classifier whose log-posteriors
    carry ``from_prior`` (log p + log to - log from, renormalized)."""
    shift = np.log(np.clip(np.asarray(to_prior, np.float64), 1e-12, None)) - np.log(
        np.clip(np.asarray(from_prior, np.float64), 1e-12, None)
    )
    z = np.asarray(log_posteriors, np.float64) + shift[None, :]
    z -= z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def class_frequencies(labels: np.ndarray, num_classes: int, pseudo_count: float = 0.5) -> np.ndarray:
    """Class shares of a labeled split, with ``pseudo_count`` added to every class so that a class
    absent from a small split keeps a non-zero prior (Jeffreys' 1/2)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(np.float64) + pseudo_count
    return counts / counts.sum()


def em_prior(
    posteriors: np.ndarray,
    train_prior: np.ndarray,
    max_iter: int = 1000,
    tol: float = 1e-8,
    prior_strength: float = 0.0,
) -> PriorEstimate:
    """Estimate the test priors from posteriors (N, C) of a classifier trained under ``train_prior``.

    ``prior_strength`` = lambda > 0 makes it the MAP estimate under a Dirichlet prior centred on
    ``train_prior`` with lambda pseudo-samples: the M-step becomes
    p^(s+1)(w) = (sum_k p^(s)(w|x_k) + lambda p_t(w)) / (N + lambda). It keeps a finite test set's
    noise (and the posteriors' residual miscalibration) from pulling the estimate away from p_t when
    the priors did not change, and fades as N grows. 0 is the maximum-likelihood EM of the paper."""
    posteriors = np.asarray(posteriors, np.float64)
    train_prior = np.asarray(train_prior, np.float64)
    if posteriors.ndim != 2 or posteriors.shape[1] != len(train_prior):
        raise ValueError(f"posteriors {posteriors.shape} do not match {len(train_prior)} training priors")
    if len(posteriors) == 0:
        raise ValueError("EM prior estimation needs at least one test sample")
    train_prior = train_prior / train_prior.sum()
    prior = train_prior.copy()
    adjusted = posteriors
    for iteration in range(1, max_iter + 1):
        adjusted = adjust_posteriors(posteriors, train_prior, prior)
        new = (adjusted.sum(0) + prior_strength * train_prior) / (len(adjusted) + prior_strength)
        change = float(np.abs(new - prior).max())
        prior = new
        if change < tol:
            return PriorEstimate(prior, adjust_posteriors(posteriors, train_prior, prior), iteration, True)
    return PriorEstimate(prior, adjust_posteriors(posteriors, train_prior, prior), max_iter, False)


def fit_calibration(logits: np.ndarray, labels: np.ndarray, bias: bool = True) -> tuple[float, np.ndarray]:
    """Temperature T (and, with ``bias``, per-class biases b) minimizing the validation NLL of
    softmax(logits / T + b): temperature scaling (Guo et al., 2017) or its bias-corrected form (BCTS,
    Alexandari, Kundaje & Shrikumar, ICML 2020), which makes EM prior estimation reliable when the
    network's posteriors are miscalibrated. Fit on a labeled split drawn under the training prior."""
    import torch

    # Lightning evaluates under inference mode, where no graph can be built: leave it here.
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.tensor(np.asarray(logits, np.float64))
        y = torch.tensor(np.asarray(labels, np.int64))
        log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
        params = [log_t, b] if bias else [log_t]
        optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x / log_t.exp() + (b if bias else 0.0), y)
            loss.backward()
            return loss

        optimizer.step(closure)
    return float(log_t.exp()), (b.detach().numpy() if bias else np.zeros(x.shape[1]))


def calibrated_posteriors(logits: np.ndarray, temperature: float, biases: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature + np.asarray(biases, np.float64)[None, :]
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class PriorCalibration:
    """Calibration fit on a labeled split plus the prior its outputs carry (EM's p_t)."""

    mode: str  # none | ts | bcts
    temperature: float
    biases: np.ndarray
    sampler_prior: np.ndarray  # what the network was trained under
    split_prior: np.ndarray  # the calibration split's class frequencies
    reference_prior: np.ndarray  # the prior the calibrated posteriors carry: EM starts here

    def posteriors(self, log_posteriors: np.ndarray) -> np.ndarray:
        """Calibrated posteriors of network log-posteriors (N, C)."""
        if self.mode == "none":
            return calibrated_posteriors(log_posteriors, 1.0, np.zeros(len(self.sampler_prior)))
        rebased = rebase_log_posteriors(log_posteriors, self.sampler_prior, self.split_prior)
        return calibrated_posteriors(rebased, self.temperature, self.biases)


def fit_prior_calibration(
    log_posteriors: np.ndarray, labels: np.ndarray, sampler_prior, mode: str = "bcts"
) -> PriorCalibration:
    """``ts`` / ``bcts``: move the network's log-posteriors from the sampler's prior to the labeled
    split's class frequencies, fit temperature (and class biases) there; the reference prior is the mean
    calibrated posterior on the split (equal to its class frequencies for ``bcts``). ``none``: the raw
    posteriors, which carry the sampler's prior."""
    if mode not in ("none", "ts", "bcts"):
        raise ValueError(f"calibration={mode!r}: choose 'none', 'ts' or 'bcts'")
    sampler_prior = np.asarray(sampler_prior, np.float64)
    sampler_prior = sampler_prior / sampler_prior.sum()
    num_classes = len(sampler_prior)
    split_prior = class_frequencies(labels, num_classes)
    if mode == "none":
        zeros = np.zeros(num_classes)
        return PriorCalibration("none", 1.0, zeros, sampler_prior, split_prior, sampler_prior)
    rebased = rebase_log_posteriors(log_posteriors, sampler_prior, split_prior)
    temperature, biases = fit_calibration(rebased, labels, bias=mode == "bcts")
    calibration = PriorCalibration(mode, temperature, biases, sampler_prior, split_prior, split_prior)
    calibration.reference_prior = calibration.posteriors(log_posteriors).mean(0)
    return calibration
