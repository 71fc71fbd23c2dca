import pytest
import torch

from lop_core.optim import SGDW, AdamW


def test_sgdw_hand_worked_step_with_per_run_hyperparameters():
    p = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 4.0]]))  # [R=2, 2]
    opt = SGDW([p], lr=[0.1, 0.5], l2_factor=[0.01, 0.0])
    p.grad = torch.tensor([[1.0, 1.0], [2.0, -2.0]])
    opt.step()
    # run 0: theta * 0.99 - 0.1 * g ; run 1: theta - 0.5 * g
    expected = torch.tensor([[0.99 - 0.1, -1.98 - 0.1], [0.5 - 1.0, 4.0 + 1.0]])
    assert torch.allclose(p.data, expected)


def test_sgdw_momentum_matches_torch_sgd_and_reset_zeroes_buffers():
    torch.manual_seed(0)
    w0 = torch.randn(1, 3, 4)
    p = torch.nn.Parameter(w0.clone())
    q = torch.nn.Parameter(w0[0].clone())
    ours = SGDW([p], lr=[0.05], momentum=[0.9])
    ref = torch.optim.SGD([q], lr=0.05, momentum=0.9)
    for _ in range(5):
        g = torch.randn(3, 4)
        p.grad, q.grad = g[None].clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.allclose(p.data[0], q.data, atol=1e-6)
    mask = torch.zeros_like(p, dtype=torch.bool)
    mask[0, 1] = True
    ours.reset_state(0, mask, "moments")
    buf = ours.state[0]["momentum"]
    assert (buf[0, 1] == 0).all() and (buf[0, 0] != 0).all()


def test_adamw_matches_torch_adamw():
    torch.manual_seed(0)
    w0 = torch.randn(3, 5)
    p = torch.nn.Parameter(w0[None].clone())
    q = torch.nn.Parameter(w0.clone())
    lr, l2 = 1e-3, 1e-4
    ours = AdamW([p], lr=[lr], l2_factor=[l2], betas=([0.9], [0.999]))
    ref = torch.optim.AdamW([q], lr=lr, weight_decay=l2 / lr, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(20):
        g = torch.randn(3, 5)
        p.grad, q.grad = g[None].clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.allclose(p.data[0], q.data, atol=1e-6)


def test_adamw_reset_of_moments_and_step_count():
    p = torch.nn.Parameter(torch.ones(1, 4))
    opt = AdamW([p], lr=[0.1])
    for _ in range(3):
        p.grad = torch.ones(1, 4)
        opt.step()
    mask = torch.tensor([[True, False, False, False]])
    with pytest.raises(ValueError, match="under AdamW"):  # zeroed moments under an old step count
        opt.reset_state(0, mask, "moments")
    s = opt.state[0]
    opt.reset_state(0, mask, "all")
    assert s["m"][0, 0] == 0 and s["v"][0, 0] == 0 and s["m"][0, 1] != 0
    assert s["step"][0, 0] == 0 and s["step"][0, 1] == 3
    assert s["c1"][0, 0] == 1 and s["c2"][0, 0] == 1  # b^0: the running powers restart with the count
    assert torch.isclose(s["c1"][0, 1], torch.tensor(0.9**3)) and torch.isclose(
        s["c2"][0, 1], torch.tensor(0.999**3)
    )
    before = p.data.clone()
    p.grad = torch.ones(1, 4)
    opt.step()
    # a fresh entry's first Adam step moves it by exactly lr (bias-corrected m / sqrt(v) = 1)
    assert torch.isclose(before[0, 0] - p.data[0, 0], torch.tensor(0.1), atol=1e-6)


def test_adamw_resumes_a_state_without_running_powers_from_its_step_count():
    p, q = (torch.nn.Parameter(torch.ones(2, 3)) for _ in range(2))
    a, b = AdamW([p], lr=[0.1, 0.2]), AdamW([q], lr=[0.1, 0.2])
    for step in range(5):
        for x, opt in ((p, a), (q, b)):
            x.grad = torch.full((2, 3), 0.5 + step)
            opt.step()
        if step == 1:  # an older checkpoint: the count only
            state = b.state_dict()
            state["state"][0] = {k: v for k, v in state["state"][0].items() if k not in ("c1", "c2")}
            b.load_state_dict(state)
    assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)


def test_adam_steps_of_reset_entries_stay_at_the_learning_rate():
    """Under a constant gradient Adam moves every entry by lr per step. After an ``all`` reset
    (moments and step count, Dohare's AdamGnT) a reset entry does so again from its first step;
    zeroing the moments alone would leave the old step count's bias correction, whose steps
    reach ~6.5 lr some 10 steps after the reset (hence ``moments`` is refused under AdamW)."""
    p = torch.nn.Parameter(torch.zeros(1, 2))
    opt = AdamW([p], lr=[0.01])
    for _ in range(200):
        p.grad = torch.ones(1, 2)
        opt.step()
    opt.reset_state(0, torch.tensor([[True, False]]), "all")
    for _ in range(20):
        before = p.data.clone()
        p.grad = torch.ones(1, 2)
        opt.step()
        assert torch.allclose(before - p.data, torch.full((1, 2), 0.01), rtol=1e-4)
    # what `moments` did: m and v zeroed under the old step count (here 5,000: bias correction ~1)
    for _ in range(4800):
        p.grad = torch.ones(1, 2)
        opt.step()
    opt.state[0]["m"][0, 0] = opt.state[0]["v"][0, 0] = 0.0
    worst = 0.0
    for _ in range(20):
        before = p.data.clone()
        p.grad = torch.ones(1, 2)
        opt.step()
        worst = max(worst, (before - p.data)[0, 0].item() / 0.01)
    assert 6 < worst < 7
