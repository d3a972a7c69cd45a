"""The paper's MNIST CNN with forward gradients (Baydin et al. 2022, Sec. 5.2).

    python examples/mnist_cnn.py [--channels 64,64,64,64 --hidden 1024] [--steps N] ...

Two 3x3 convs, max-pool 2, two 3x3 convs, max-pool 2, linear 3136 -> 1024 -> 10, ReLU
throughout (as orobix/fwdgrad builds it). The full network costs ~6 GFLOPs per batch of 64,
so on 2 CPU cores the default here is a narrower CNN (8,8,16,16 channels, 256 hidden);
pass --channels 64,64,64,64 --hidden 1024 for the paper's size.
"""

from _mnist import run

if __name__ == "__main__":
    run("cnn", __doc__, steps=2_000, optimizer="adam", lr=3e-4, eval_every=500, target_loss=1.0,
        channels="8,8,16,16", hidden=256)
