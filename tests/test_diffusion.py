"""Numbers-level tests of the categorical diffusion math and the respaced sampler."""
from __future__ import annotations

import pytest
import torch

from diffoseg_auto.diffusion import CategoricalDiffusion, one_hot, sample_categorical
from diffoseg_auto.diffusion.schedules import cosine_alpha_bar, linear_alpha_bar, make_alpha_bar


# ------------------------------------------------------------------ brute-force reference
def step_matrix(diff: CategoricalDiffusion, t: int) -> torch.Tensor:
    """Q_t[i, j] = q(x_t = j | x_{t-1} = i), built from the per-step alpha_t only."""
    K = diff.num_classes
    a = diff.alpha_bar[t] / diff.alpha_bar[t - 1]
    return a * torch.eye(K, dtype=torch.float64) + (1 - a) / K


def cum_matrix(diff: CategoricalDiffusion, s: int, t: int) -> torch.Tensor:
    """q(x_t | x_s) as the explicit product Q_{s+1} ... Q_t."""
    m = torch.eye(diff.num_classes, dtype=torch.float64)
    for u in range(s + 1, t + 1):
        m = m @ step_matrix(diff, u)
    return m


def brute_posterior(diff: CategoricalDiffusion, j: int, p0: torch.Tensor, t: int, s: int) -> torch.Tensor:
    """q(x_s | x_t = j) for x0 ~ p0 by enumeration: build the joint p(x0) q(x_s | x0) q(x_t | x_s) over
    every (x0, x_s, x_t) from the K x K matrices, keep x_t = j, normalise (Bayes). Shares no formula
    with q_posterior."""
    K = diff.num_classes
    m_0s, m_st = cum_matrix(diff, 0, s), cum_matrix(diff, s, t)
    joint = torch.zeros(K, K, K, dtype=torch.float64)  # (x0, x_s, x_t)
    for c in range(K):
        for i in range(K):
            for k in range(K):
                joint[c, i, k] = p0[c] * m_0s[c, i] * m_st[i, k]
    observed = joint[:, :, j]  # condition on x_t = j
    return observed.sum(dim=0) / observed.sum()


def random_probs(shape, gen) -> torch.Tensor:
    return torch.softmax(3 * torch.randn(shape, generator=gen), dim=1)


# ------------------------------------------------------------------ schedules
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("T", [10, 250, 1000])
def test_alpha_bar_monotone_and_bounded(schedule, T):
    ab = CategoricalDiffusion(3, T, schedule).alpha_bar
    assert ab.shape == (T + 1,) and ab[0] == 1.0
    assert torch.all(ab[1:] < ab[:-1])
    assert ab[-1] > 0
    assert ab[-1] < 1e-3  # both schedules end (almost) at pure noise


def test_cosine_and_linear_values():
    T = 1000
    ab = cosine_alpha_bar(T)
    assert ab[-1] < 1e-8  # last beta clipped to 0.999
    assert 1 - ab[T] / ab[T - 1] == pytest.approx(0.999)
    assert ab[T // 2].item() == pytest.approx(0.4936, abs=1e-3)  # cos^2 at ~half the angle
    lab = linear_alpha_bar(T)
    assert 1 - lab[1].item() == pytest.approx(1e-4)
    assert 1 - (lab[T] / lab[T - 1]).item() == pytest.approx(0.02)
    # scale = 1000/T keeps the endpoint noise level comparable across T
    lab100 = linear_alpha_bar(100)
    assert 1 - lab100[1].item() == pytest.approx(1e-3)
    assert 1 - (lab100[100] / lab100[99]).item() == pytest.approx(0.2)
    assert lab100[-1] < 1e-3


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_shift_lowers_interior(schedule):
    base = make_alpha_bar(schedule, 100, 1.0)
    shifted = make_alpha_bar(schedule, 100, 2.0)
    assert shifted[0] == 1.0
    assert torch.all(shifted[1:] < base[1:])
    logit = lambda x: torch.log(x / (1 - x))  # noqa: E731
    torch.testing.assert_close(logit(shifted[1:-1]), logit(base[1:-1]) - 2 * torch.log(torch.tensor(2.0, dtype=torch.float64)))
    torch.testing.assert_close(make_alpha_bar(schedule, 100, 1.0), base)


def test_bad_schedule_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="schedule"):
        CategoricalDiffusion(3, 10, "sigmoid")
    with pytest.raises(ValueError, match="schedule_shift"):
        CategoricalDiffusion(3, 10, "cosine", schedule_shift=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        CategoricalDiffusion(1, 10)


# ------------------------------------------------------------------ forward process
def test_marginals_sum_to_one_and_match_matrix_products():
    diff = CategoricalDiffusion(4, 20)
    gen = torch.Generator().manual_seed(0)
    x0 = random_probs((2, 4, 5, 6), gen)
    for t in range(diff.num_timesteps + 1):
        q = diff.q_xt_given_x0(x0, torch.tensor([t, t]))
        torch.testing.assert_close(q.sum(1), torch.ones(2, 5, 6))
        # row c of Qbar_t, mixed over x0
        expected = torch.einsum("bc...,cj->bj...", x0.double(), cum_matrix(diff, 0, t)).float()
        torch.testing.assert_close(q, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(diff.q_xt_given_x0(x0, torch.tensor([0, 0])), x0)


def test_q_sample_frequencies_and_one_hot():
    diff = CategoricalDiffusion(3, 10)
    labels = torch.zeros(1, 200, 200, dtype=torch.long)
    x0 = one_hot(labels, 3)
    t = torch.tensor([5])
    xt = diff.q_sample(x0, t, generator=torch.Generator().manual_seed(1))
    assert torch.all((xt == 0) | (xt == 1)) and torch.all(xt.sum(1) == 1)
    freq = xt.mean(dim=(0, 2, 3))
    expected = diff.q_xt_given_x0(x0[..., :1, :1], t).reshape(3)
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)
    # soft x0: the marginal is the mixture over x0
    soft = torch.tensor([0.2, 0.0, 0.8]).reshape(1, 3, 1, 1).expand(1, 3, 200, 200)
    xt = diff.q_sample(soft, t, generator=torch.Generator().manual_seed(2))
    expected = diff.q_xt_given_x0(soft[..., :1, :1], t).reshape(3)
    torch.testing.assert_close(xt.mean(dim=(0, 2, 3)), expected, atol=0.01, rtol=0)


def test_one_hot_and_errors():
    lab = torch.tensor([[[0, 2], [1, 0]]])
    oh = one_hot(lab, 3)
    assert oh.shape == (1, 3, 2, 2) and oh.dtype == torch.float32
    torch.testing.assert_close(oh.argmax(1), lab)
    with pytest.raises(ValueError, match="0..2"):
        one_hot(torch.tensor([[3]]), 3)
    with pytest.raises(TypeError):
        one_hot(torch.tensor([[0.0]]), 3)


def test_sample_categorical_frequencies_and_zero_probability_classes():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.5]).reshape(1, 4, 1, 1).expand(1, 4, 300, 300)
    lab = sample_categorical(probs, torch.Generator().manual_seed(0))
    counts = torch.bincount(lab.flatten(), minlength=4).double() / lab.numel()
    assert counts[0] == 0 and counts[2] == 0
    assert counts[1].item() == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------ posterior
@pytest.mark.parametrize("t,s", [(1, 0), (2, 1), (7, 6), (20, 19), (9, 3), (20, 0), (15, 1)])
def test_q_posterior_one_hot_matches_bayes(t, s):
    K = 3
    diff = CategoricalDiffusion(K, 20)
    # all (x_t, x0) combinations: j along Y, c along X
    xt_lab = torch.arange(K).reshape(1, K, 1).expand(1, K, K)
    x0_lab = torch.arange(K).reshape(1, 1, K).expand(1, K, K)
    xt, x0 = one_hot(xt_lab, K), one_hot(x0_lab, K)
    tt, ss = torch.tensor([t]), torch.tensor([s])
    post = diff.q_posterior(xt, x0, tt, ss if s != t - 1 else None)
    for j in range(K):
        for c in range(K):
            expected = brute_posterior(diff, j, torch.eye(K, dtype=torch.float64)[c], t, s)
            torch.testing.assert_close(post[0, :, j, c].double(), expected, atol=1e-6, rtol=1e-5)
    if s == 0:
        torch.testing.assert_close(post, x0)


@pytest.mark.parametrize("t,s", [(1, 0), (5, 4), (12, 2), (20, 0)])
def test_q_posterior_soft_x0_matches_bayes_3d(t, s):
    K = 4
    diff = CategoricalDiffusion(K, 20, "linear", schedule_shift=1.5)
    gen = torch.Generator().manual_seed(3)
    p0 = random_probs((2, K, 2, 3, 2), gen)
    xt = one_hot(torch.randint(0, K, (2, 2, 3, 2), generator=gen), K)
    post = diff.q_posterior(xt, p0, torch.tensor([t, t]), torch.tensor([s, s]))
    torch.testing.assert_close(post.sum(1), torch.ones(2, 2, 3, 2))
    for b, z, y, x in [(0, 0, 0, 0), (1, 1, 2, 1), (0, 1, 1, 0), (1, 0, 2, 1)]:
        j = int(xt[b, :, z, y, x].argmax())
        expected = brute_posterior(diff, j, p0[b, :, z, y, x].double(), t, s)
        torch.testing.assert_close(post[b, :, z, y, x].double(), expected, atol=1e-6, rtol=1e-5)
    if s == 0:  # q(x0 | x_t) ∝ p0 * q(x_t | x0): p0 reweighted by the likelihood of the observed x_t
        lik = diff.q_xt_given_x0(xt, torch.tensor([t, t]))  # q(x_t=j | x0=c) is symmetric in (j, c)
        torch.testing.assert_close(post, p0 * lik / (p0 * lik).sum(1, keepdim=True))


def test_soft_posterior_weights_components_by_their_likelihood_of_x_t():
    """The issue's example: K=2, cosine, T=250, p=(0.5, 0.5), x_t=0, t=2 -> q(x_1=1 | x_t) = 0.00014.
    A mixture weighted by the prior p_c (the former code) gives 0.29: x_t=0 at t=2 is strong evidence
    for x0=0, and Bayes must use it."""
    K, t = 2, 2
    diff = CategoricalDiffusion(K, 250, "cosine")
    xt = one_hot(torch.tensor([[[0]]]), K)
    p0 = torch.tensor([0.5, 0.5]).reshape(1, 2, 1, 1)
    post = diff.q_posterior(xt, p0, torch.tensor([t]))[0, :, 0, 0].double()
    assert post[1].item() == pytest.approx(1.4e-4, rel=0.05)
    torch.testing.assert_close(post, brute_posterior(diff, 0, p0.reshape(2).double(), t, t - 1), atol=1e-9, rtol=1e-6)
    prior_weighted = 0.5 * brute_posterior(diff, 0, torch.tensor([1.0, 0.0], dtype=torch.float64), t, t - 1) \
        + 0.5 * brute_posterior(diff, 0, torch.tensor([0.0, 1.0], dtype=torch.float64), t, t - 1)
    assert prior_weighted[1].item() == pytest.approx(0.29, abs=0.01)


@pytest.mark.parametrize("shift", [1.0, 2.0])
@pytest.mark.parametrize("t,s", [(2, 1), (9, 8), (9, 3), (20, 0), (20, 11)])
def test_q_posterior_soft_x0_matches_enumerated_joint_cosine(t, s, shift):
    """Soft x0, adjacent and respaced steps, with and without a schedule shift, K = 3."""
    K = 3
    diff = CategoricalDiffusion(K, 20, "cosine", schedule_shift=shift)
    gen = torch.Generator().manual_seed(11)
    p0 = random_probs((1, K, 5), gen)
    xt = one_hot(torch.tensor([[0, 1, 2, 0, 2]]), K)
    post = diff.q_posterior(xt, p0, torch.tensor([t]), torch.tensor([s]))
    for v in range(5):
        j = int(xt[0, :, v].argmax())
        expected = brute_posterior(diff, j, p0[0, :, v].double(), t, s)
        torch.testing.assert_close(post[0, :, v].double(), expected, atol=1e-6, rtol=1e-5)


def test_q_posterior_rejects_s_not_below_t():
    diff = CategoricalDiffusion(2, 10)
    x = one_hot(torch.zeros(1, 2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="s < t"):
        diff.q_posterior(x, x, torch.tensor([3]), torch.tensor([3]))
    with pytest.raises(ValueError, match="1..10"):
        diff.q_posterior(x, x, torch.tensor([0]))


# ------------------------------------------------------------------ training loss
def test_training_loss_zero_for_perfect_prediction_and_positive_otherwise():
    K = 3
    diff = CategoricalDiffusion(K, 50)
    gen = torch.Generator().manual_seed(4)
    lab = torch.randint(0, K, (4, 8, 8), generator=gen)
    x0 = one_hot(lab, K)
    t = torch.tensor([1, 2, 25, 50])
    xt = diff.q_sample(x0, t, generator=gen)
    assert diff.training_loss(x0, x0, xt, t).item() == pytest.approx(0.0, abs=1e-6)
    wrong = random_probs((4, K, 8, 8), gen)
    assert diff.training_loss(x0, wrong, xt, t).item() > 1e-3
    per_sample = [diff.training_loss(x0[i:i + 1], wrong[i:i + 1], xt[i:i + 1], t[i:i + 1]).item() for i in range(4)]
    assert all(v > 0 for v in per_sample)
    # at t = T the posterior hardly depends on x0 (alpha_bar_{T-1} ~ 1e-5): the KL is tiny there
    assert per_sample[3] < 1e-3 < min(per_sample[:3])


def test_training_loss_values_t1_is_cross_entropy_and_batch_mixes():
    K = 2
    diff = CategoricalDiffusion(K, 10)
    x0 = one_hot(torch.tensor([[[0, 1]]]), K)             # (1, 2, 1, 2)
    pred = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]])    # p(correct) = 0.8, 0.7
    xt = one_hot(torch.tensor([[[1, 1]]]), K)
    ce = -(torch.log(torch.tensor(0.8)) + torch.log(torch.tensor(0.7))) / 2
    loss1 = diff.training_loss(x0, pred, xt, torch.tensor([1]))
    assert loss1.item() == pytest.approx(ce.item(), rel=1e-5)
    # t = 5: KL of the two posteriors, computed by brute force
    kl = 0.0
    for v in range(2):
        q = brute_posterior(diff, 1, x0[0, :, 0, v].double(), 5, 4)
        p = brute_posterior(diff, 1, pred[0, :, 0, v].double(), 5, 4)
        kl += (q * (q / p).log()).sum().item() / 2
    loss5 = diff.training_loss(x0, pred, xt, torch.tensor([5]))
    assert loss5.item() == pytest.approx(kl, rel=1e-4)
    both = diff.training_loss(torch.cat([x0, x0]), torch.cat([pred, pred]), torch.cat([xt, xt]), torch.tensor([1, 5]))
    assert both.item() == pytest.approx((ce.item() + kl) / 2, rel=1e-4)


def test_training_loss_x0_cross_entropy_weight_adds_weighted_ce_for_t_above_1_only():
    K = 2
    diff = CategoricalDiffusion(K, 10)
    x0 = one_hot(torch.tensor([[[0, 1]]]), K)
    pred = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]])
    xt = one_hot(torch.tensor([[[1, 1]]]), K)
    ce = -(torch.log(torch.tensor(0.8)) + torch.log(torch.tensor(0.7))).item() / 2
    kl5 = diff.training_loss(x0, pred, xt, torch.tensor([5])).item()
    hybrid5 = diff.training_loss(x0, pred, xt, torch.tensor([5]), x0_ce_weight=0.5).item()
    assert hybrid5 == pytest.approx(kl5 + 0.5 * ce, rel=1e-5)
    # t = 1 is already the cross-entropy: the weight must not count it twice
    assert diff.training_loss(x0, pred, xt, torch.tensor([1]), x0_ce_weight=0.5).item() == pytest.approx(ce, rel=1e-5)
    # a perfect prediction still has zero loss
    assert diff.training_loss(x0, x0, xt, torch.tensor([5]), x0_ce_weight=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_training_loss_gradient_and_half_precision_inputs():
    K = 3
    diff = CategoricalDiffusion(K, 1000)
    gen = torch.Generator().manual_seed(6)
    x0 = one_hot(torch.randint(0, K, (3, 4, 4), generator=gen), K)
    t = torch.tensor([1, 2, 500])
    xt = diff.q_sample(x0, t, generator=gen)
    logits = torch.randn((3, K, 4, 4), generator=gen, requires_grad=True)
    loss = diff.training_loss(x0, torch.softmax(logits, 1), xt, t)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    # float16 inputs: (1 - alpha_bar_1)/K ~ 1e-6 must not vanish; result equals the float32 one
    p0 = torch.softmax(logits.detach(), 1)
    post16 = diff.q_posterior(xt.half(), p0.half(), t)
    assert post16.dtype == torch.float32
    torch.testing.assert_close(post16, diff.q_posterior(xt, p0.half().float(), t))


def test_sample_timesteps_uniform_over_1_to_T():
    T, n = 10, 50_000
    diff = CategoricalDiffusion(2, T)
    t = diff.sample_timesteps(n, "cpu", generator=torch.Generator().manual_seed(5))
    assert t.dtype == torch.long and t.shape == (n,)
    assert t.min() == 1 and t.max() == T
    counts = torch.bincount(t, minlength=T + 1)[1:].double()
    chi2 = ((counts - n / T) ** 2 / (n / T)).sum().item()
    assert chi2 < 30  # 9 degrees of freedom: p ~ 4e-4
    t2 = diff.sample_timesteps(n, "cpu", generator=torch.Generator().manual_seed(5))
    assert torch.equal(t, t2)


# ------------------------------------------------------------------ sampler
@pytest.mark.parametrize("T", [1, 7, 10, 250, 1000])
def test_timesteps_for_sampling_properties(T):
    diff = CategoricalDiffusion(2, T)
    for S in sorted({1, 2, 3, 7, 10, 25, 100, T}):
        if S > T:
            continue
        steps = diff.timesteps_for_sampling(S)
        assert len(steps) == S and steps[0] == T and steps[-1] == (1 if S > 1 else T)
        assert all(a > b for a, b in zip(steps, steps[1:]))
    assert diff.timesteps_for_sampling(T) == list(range(T, 0, -1))
    with pytest.raises(ValueError, match="num_steps"):
        diff.timesteps_for_sampling(T + 1)
    assert CategoricalDiffusion(2, 1000).timesteps_for_sampling(4) == [1000, 667, 334, 1]


def _toy_denoiser(K: int, spatial, seed: int):
    """Deterministic, depends on x_t and t, never one-hot: exercises the soft-x0 posterior."""
    logits = torch.randn((1, K, *spatial), generator=torch.Generator().manual_seed(seed))

    def fn(x_t, t):
        w = t.float().reshape(-1, *([1] * (x_t.ndim - 1))) / 10.0
        return torch.softmax(2 * x_t + w * logits, dim=1)
    return fn


@pytest.mark.parametrize("spatial", [(6, 5), (3, 4, 2)])
def test_respaced_with_S_equal_T_equals_plain_loop(spatial):
    K, T, B = 3, 12, 2
    diff = CategoricalDiffusion(K, T)
    fn = _toy_denoiser(K, spatial, 0)
    shape = (B, K, *spatial)
    labels, probs = diff.sample(fn, shape, T, generator=torch.Generator().manual_seed(7), return_probs=True)

    gen = torch.Generator().manual_seed(7)
    x = one_hot(sample_categorical(torch.full(shape, 1.0 / K), gen), K)
    for t in range(T, 0, -1):
        tv = torch.full((B,), t, dtype=torch.long)
        p0 = fn(x, tv)
        if t > 1:
            x = one_hot(sample_categorical(diff.q_posterior(x, p0, tv), gen), K)
    assert torch.equal(labels, p0.argmax(1))
    torch.testing.assert_close(probs, p0)
    assert labels.shape == (B, *spatial) and labels.dtype == torch.long

    # 'sample' final step: same stream, one more draw from p0
    lab_s = diff.sample(fn, shape, T, final_step="sample", generator=torch.Generator().manual_seed(7))
    assert torch.equal(lab_s, sample_categorical(p0, gen))


@pytest.mark.parametrize("S", [10, 50])
@pytest.mark.parametrize("final_step", ["argmax", "sample", "denoise"])
def test_oracle_denoiser_recovers_x0(S, final_step):
    K, T = 4, 50
    diff = CategoricalDiffusion(K, T)
    gen = torch.Generator().manual_seed(8)
    x0_lab = torch.randint(0, K, (2, 9, 7), generator=gen)
    x0 = one_hot(x0_lab, K)
    out = diff.sample(lambda x_t, t: x0, x0.shape, S, final_step=final_step, generator=gen)
    assert torch.equal(out, x0_lab)


def test_oracle_chain_has_forward_marginals():
    """With p0 = true x0, x_t along the respaced chain must follow q(x_t | x0)."""
    K, T, S = 3, 20, 5
    diff = CategoricalDiffusion(K, T)
    x0 = one_hot(torch.zeros(1, 150, 150, dtype=torch.long), K)
    seen = {}

    def oracle(x_t, t):
        seen[int(t[0])] = x_t[:, 0].mean().item()  # fraction still in the true class
        return x0
    diff.sample(oracle, x0.shape, S, generator=torch.Generator().manual_seed(9))
    assert sorted(seen) == sorted(diff.timesteps_for_sampling(S))
    for t, frac in seen.items():
        expected = diff.alpha_bar[t].item() + (1 - diff.alpha_bar[t].item()) / K
        assert frac == pytest.approx(expected, abs=0.012), t


def test_sample_is_reproducible_and_accepts_x_T():
    K, T = 3, 30
    diff = CategoricalDiffusion(K, T)
    fn = _toy_denoiser(K, (8, 8), 1)
    a = diff.sample(fn, (2, K, 8, 8), 6, generator=torch.Generator().manual_seed(3))
    b = diff.sample(fn, (2, K, 8, 8), 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    x_T = one_hot(torch.zeros(2, 8, 8, dtype=torch.long), K)
    seen = []
    diff.sample(lambda x, t: seen.append(x.clone()) or torch.full_like(x, 1 / K), (2, K, 8, 8), 3, x_T=x_T)
    assert torch.equal(seen[0], x_T)
    with pytest.raises(ValueError, match="final_step"):
        diff.sample(fn, (2, K, 8, 8), 3, final_step="mode")
    with pytest.raises(ValueError, match="shape"):
        diff.sample(fn, (2, K + 1, 8, 8), 3)


# ------------------------------------------------------------------ reading p(x0 | x_t) from the network
def expected_losses(diff: CategoricalDiffusion, logits: torch.Tensor, pi: torch.Tensor, t: int, j: int):
    """One voxel whose x0 ~ pi, observed x_t = j: the expected KL and CE terms of training_loss for the
    network output softmax(logits), the expectation over x0 ~ q(x0 | x_t = j) taken by enumeration."""
    K = diff.num_classes
    w = pi * cum_matrix(diff, 0, t)[:, j].to(pi)  # q(x0 = c, x_t = j), enumerated
    w = w / w.sum()
    p = torch.softmax(logits, 0).reshape(1, K, 1, 1).expand(K, K, 1, 1)
    x0 = torch.eye(K, dtype=p.dtype).reshape(K, K, 1, 1)
    xt = torch.zeros(K, K, 1, 1, dtype=p.dtype)
    xt[:, j] = 1
    tt = torch.full((K,), t)
    q_true, q_pred = diff.q_posterior(xt, x0, tt), diff.q_posterior(xt, p, tt)
    kl = (q_true * (q_true.clamp_min(1e-12).log() - q_pred.clamp_min(1e-12).log())).sum(1).reshape(K)
    ce = -(x0 * diff.x0_posterior(xt, p, tt).clamp_min(1e-12).log()).sum(1).reshape(K)
    return (w * kl).sum(), (w * ce).sum()


def minimise(fn, K: int, steps: int = 3000) -> torch.Tensor:
    logits = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        fn(logits).backward()
        opt.step()
    return torch.softmax(logits.detach(), 0)


@pytest.mark.parametrize("t,j", [(3, 0), (10, 2)])
def test_bayes_readout_gives_the_kl_and_the_ce_term_the_same_optimum(t, j):
    """One voxel, x0 ~ pi, nothing else to see. The KL term is minimised by p = pi (the single-normaliser
    posterior is exact for x0's distribution before x_t). With x0_given_xt = 'bayes' the CE term has the
    same minimiser; read as p itself ('network') the CE term pulls p to q(x0 | x_t) instead, which the
    sampler would then weight by q(x_t | x0) a second time."""
    K = 3
    pi = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    bayes, network = CategoricalDiffusion(K, 20, x0_given_xt="bayes"), CategoricalDiffusion(K, 20)
    p_kl = minimise(lambda z: expected_losses(network, z, pi, t, j)[0], K)
    torch.testing.assert_close(p_kl, pi, atol=2e-3, rtol=0)
    p_ce_bayes = minimise(lambda z: expected_losses(bayes, z, pi, t, j)[1], K)
    torch.testing.assert_close(p_ce_bayes, pi, atol=2e-3, rtol=0)
    p_ce_network = minimise(lambda z: expected_losses(network, z, pi, t, j)[1], K)
    posterior = pi * cum_matrix(network, 0, t)[:, j]
    torch.testing.assert_close(p_ce_network, posterior / posterior.sum(), atol=2e-3, rtol=0)
    assert (p_ce_network - pi).abs().max() > 0.1


def test_x0_posterior_readouts():
    K, t = 3, 4
    gen = torch.Generator().manual_seed(5)
    p = random_probs((2, K, 3, 3), gen)
    xt = one_hot(torch.randint(0, K, (2, 3, 3), generator=gen), K)
    tt = torch.tensor([t, t])
    assert torch.equal(CategoricalDiffusion(K, 20).x0_posterior(xt, p, tt), p)
    got = CategoricalDiffusion(K, 20, x0_given_xt="bayes").x0_posterior(xt, p, tt)
    for b, y, x in [(0, 0, 0), (1, 2, 1)]:
        j = int(xt[b, :, y, x].argmax())
        expected = p[b, :, y, x].double() * cum_matrix(CategoricalDiffusion(K, 20), 0, t)[:, j]
        torch.testing.assert_close(got[b, :, y, x].double(), expected / expected.sum(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="x0_given_xt"):
        CategoricalDiffusion(K, 20, x0_given_xt="posterior")


def test_bayes_readout_final_step_reads_x0_given_x1():
    """The sampler's last output is p(x0 | x_1) under the plans' reading: with 'bayes' a constant network
    output p is reweighted by the likelihood of the last input x_1."""
    K, T = 2, 20
    p = torch.tensor([0.5, 0.5]).reshape(1, 2, 1, 1)
    for readout in ("network", "bayes"):
        diff = CategoricalDiffusion(K, T, x0_given_xt=readout)
        x_T = one_hot(torch.tensor([[[1]]]), K)
        _, probs = diff.sample(lambda x, t: p.expand_as(x), (1, K, 1, 1), 1, x_T=x_T, return_probs=True)
        if readout == "network":
            torch.testing.assert_close(probs, p)
        else:  # one step: the last input is x_T itself (t = T)
            lik = cum_matrix(diff, 0, T)[:, 1].float()
            torch.testing.assert_close(probs.reshape(2), (0.5 * lik) / (0.5 * lik).sum())
