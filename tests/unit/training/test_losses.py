"""The language-model losses against direct formulas (training/losses.py)."""

import pytest
import torch

from bilinear_lens.training.losses import lm_loss


def _kl(teacher, student):
    p = torch.softmax(teacher[:, :-1].double(), -1)
    q = torch.softmax(student[:, :-1].double(), -1)
    return (p * (p.log() - q.log())).sum(-1).mean()  # KL(teacher || student) per position, averaged


@pytest.mark.parametrize("w", [0.0, 0.5, 0.9, 1.0])
def test_loss_is_the_weighted_mix_of_ce_and_kl(w):
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (2, 5))
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    loss, ce = lm_loss(student, tokens, teacher, w)
    ref_ce = torch.nn.functional.cross_entropy(student[:, :-1].reshape(-1, 11).double(), tokens[:, 1:].reshape(-1))
    assert torch.allclose(ce.double(), ref_ce, atol=1e-6)
    assert torch.allclose(loss.double(), (1 - w) * ref_ce + w * _kl(teacher, student), atol=1e-6)


def test_pure_distillation_of_the_teacher_itself_is_zero():
    torch.manual_seed(1)
    tokens = torch.randint(0, 7, (3, 4))
    teacher = torch.randn(3, 4, 7)
    assert float(lm_loss(teacher, tokens, teacher, 1.0)[0]) == pytest.approx(0.0, abs=1e-6)
