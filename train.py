"""Pretrain an encoder with a contrastive loss head, then probe it.

    python train.py                        # defaults: Fashion-MNIST, AU head, small convnet
    python train.py loss=cacr data=cifar10 encoder=resnet18
    python train.py experiment=smoke       # tiny synthetic run (seconds)
    python train.py resume=runs/.../checkpoints/last.ckpt

The same command is installed as ``sslkit-train``; from Python: ``sslkit.train(overrides=[...])``.
"""

from sslkit.launch.train_cli import main

if __name__ == "__main__":
    main()
