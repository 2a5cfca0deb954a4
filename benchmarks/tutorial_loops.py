"""The reference: each model trained the way tutorials write it.

A torchvision MNIST dataset with ToTensor, a shuffling DataLoader, a
`.to(device)` per batch and a `.item()` per step (pytorch/examples' VAE, the
common "vanilla GAN" notebook, a RealNVP with multiplicative masks). The
architectures, batch sizes and optimizers (with the flow's gradient clipping
at 10) are dgm's defaults; only the way the loop is written differs.
Each loop trains `epochs` epochs and returns the last one's seconds and mean
training loss in dgm's units (negative ELBO in nats, the discriminator's loss,
bits/dim), so the benchmark can check that both compute the same thing.
"""

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

PIXELS = 784
ALPHA = 1e-5


def mnist_loader(root: str, batch_size: int, *, normalize: bool = False):
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    steps = [transforms.ToTensor()] + ([transforms.Normalize((0.5,), (0.5,))] if normalize else [])
    dataset = datasets.MNIST(root, train=True, download=False, transform=transforms.Compose(steps))
    return DataLoader(Subset(dataset, range(50_000)), batch_size=batch_size, shuffle=True)  # dgm's training split


# ---------------------------------------------------------------- VAE (pytorch/examples style)


class TutorialVAE(nn.Module):
    def __init__(self, hidden: int = 500, zdim: int = 20):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, hidden), nn.Linear(hidden, zdim), nn.Linear(hidden, zdim)
        self.fc3, self.fc4 = nn.Linear(zdim, hidden), nn.Linear(hidden, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def vae_training(root: str, device: str, *, epochs: int = 1, limit: int | None = None) -> dict:
    model = TutorialVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = mnist_loader(root, 128)
    for _ in range(epochs):
        started, train_loss, seen = time.perf_counter(), 0.0, 0
        for index, (data, _) in enumerate(loader):
            if limit is not None and index == limit:
                break
            data = torch.bernoulli(data.to(device))  # dynamic binarization, as dgm trains
            optimizer.zero_grad()
            recon, mu, logvar = model(data)
            bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = bce + kld
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            seen += len(data)
        seconds = time.perf_counter() - started
        result = {"seconds": seconds, "images": seen, "loss": train_loss / seen, "loss_name": "-ELBO"}
    return result  # the last epoch


# ---------------------------------------------------------------- GAN (the common notebook)


def gan_training(root: str, device: str, *, epochs: int = 1, limit: int | None = None) -> dict:
    generator = nn.Sequential(
        nn.Linear(100, 128),
        nn.LeakyReLU(0.2),
        nn.Linear(128, 256),
        nn.BatchNorm1d(256),
        nn.LeakyReLU(0.2),
        nn.Linear(256, 512),
        nn.BatchNorm1d(512),
        nn.LeakyReLU(0.2),
        nn.Linear(512, 1024),
        nn.BatchNorm1d(1024),
        nn.LeakyReLU(0.2),
        nn.Linear(1024, 784),
        nn.Tanh(),
    ).to(device)
    discriminator = nn.Sequential(
        nn.Linear(784, 512),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(512, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 1),
        nn.Sigmoid(),
    ).to(device)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = mnist_loader(root, 64, normalize=True)
    for _ in range(epochs):
        started, d_losses, seen = time.perf_counter(), [], 0
        for index, (real, _) in enumerate(loader):
            if limit is not None and index == limit:
                break
            real = real.view(-1, 784).to(device)
            if len(real) == 1:  # BatchNorm needs two images (dgm skips such a batch too)
                continue
            ones, zeros = torch.ones(len(real), 1, device=device), torch.zeros(len(real), 1, device=device)
            opt_d.zero_grad()
            fake = generator(torch.randn(len(real), 100, device=device))
            loss_d = criterion(discriminator(real), ones) + criterion(discriminator(fake.detach()), zeros)
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = criterion(discriminator(fake), ones)
            loss_g.backward()
            opt_g.step()
            d_losses.append(loss_d.item() * len(real))
            loss_g.item()
            seen += len(real)
        seconds = time.perf_counter() - started
        result = {"seconds": seconds, "images": seen, "loss": sum(d_losses) / seen, "loss_name": "D loss"}
    return result  # the last epoch


# ---------------------------------------------------------------- RealNVP with masks (the textbook form)


class MaskedCoupling(nn.Module):
    def __init__(self, mask: torch.Tensor, hidden: int = 1024):
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(
            nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * 784)
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x):
        kept = x * self.mask
        s, t = self.net(kept).chunk(2, dim=1)
        s = torch.tanh(s) * (1 - self.mask)
        t = t * (1 - self.mask)
        return kept + (1 - self.mask) * (x * torch.exp(s) + t), s.sum(1)


def flow_training(root: str, device: str, *, epochs: int = 1, limit: int | None = None) -> dict:
    board = ((torch.arange(28)[:, None] + torch.arange(28)[None, :]) % 2).flatten().float()
    couplings = nn.ModuleList(MaskedCoupling(board if i % 2 == 0 else 1 - board) for i in range(8)).to(device)
    optimizer = torch.optim.Adam(couplings.parameters(), lr=1e-3)
    loader = mnist_loader(root, 128)
    for _ in range(epochs):
        started, total, seen = time.perf_counter(), 0.0, 0
        for index, (data, _) in enumerate(loader):
            if limit is not None and index == limit:
                break
            x = data.view(-1, 784).to(device) * 255
            x = (x + torch.rand_like(x)) / 256
            y = ALPHA + (1 - 2 * ALPHA) * x
            z = torch.log(y) - torch.log1p(-y)
            logdet = (math.log(1 - 2 * ALPHA) - math.log(256)) * 784 - (torch.log(y) + torch.log1p(-y)).sum(1)
            for coupling in couplings:
                z, step = coupling(z)
                logdet = logdet + step
            log_prob = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1) + logdet
            loss = (-log_prob / (784 * math.log(2))).mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(couplings.parameters(), 10.0)  # dgm's default for this flow
            optimizer.step()
            total += loss.item() * len(x)
            seen += len(x)
        seconds = time.perf_counter() - started
        result = {"seconds": seconds, "images": seen, "loss": total / seen, "loss_name": "bits/dim"}
    return result  # the last epoch


LOOPS = {"vae": vae_training, "gan": gan_training, "flow": flow_training}
