import torch
import torch.nn.functional as F

from innerssl.ssl.simclr import SimCLR


def reference_nt_xent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent written out from the SimCLR paper: 2N views, positives are the other view of the image."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    similarity = z @ z.T / temperature
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        losses.append(-similarity[i, positive] + torch.logsumexp(similarity[i, others], dim=0))
    return torch.stack(losses).mean()


def test_nt_xent_equals_reference():
    torch.manual_seed(0)
    model = SimCLR(projection_hidden_dim=32, projection_dim=16, temperature=0.2)
    z0, z1 = torch.randn(6, 16), torch.randn(6, 16)
    assert torch.allclose(model.criterion(z0, z1), reference_nt_xent(z0, z1, 0.2), atol=1e-5)


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = SimCLR(encoder_name="resnet18", in_channels=3, projection_hidden_dim=64, projection_dim=32)
    images = torch.rand(8, 3, 32, 32)
    view0, view1 = images, images.flip(-1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model.ssl_loss(view0, view1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8
