"""The paper's MNIST CNN with forward gradients (Baydin et al. 2022, Sec. 5.2).

    python examples/mnist_cnn.py [--channels 64,64,64,64 --hidden 1024] [--steps N] ...

Two 3x3 convs, max-pool 2, two 3x3 convs, max-pool 2, linear 3136 -> 1024 -> 10, ReLU
throughout (as orobix/fwdgrad builds it). The full network costs ~6 GFLOPs per batch of 64,
so on 2 CPU cores the default here is a narrower CNN (8,8,16,16 channels, 256 hidden):
Adam at lr 1e-3, 6,000 steps, ~3 minutes, ~74% test accuracy. Pass
--channels 64,64,64,64 --hidden 1024 for the paper's size (~0.3 s per step on 2 cores).
"""

from _mnist import run

if __name__ == "__main__":
    run("cnn", __doc__, steps=6_000, optimizer="adam", lr=1e-3, eval_every=1_000, target_loss=1.0,
        channels="8,8,16,16", hidden=256)
